"""Deployment files: Serve config template, KubeRay RayService rendering, Dockerfile, scaling guide."""

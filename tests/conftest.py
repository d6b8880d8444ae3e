"""Shared fixtures (one thread for torch, a private artifact store, session-scoped tiny artifacts) and the
test tiers: every test carries exactly one of the markers below, or collection fails.

    python -m pytest -m unit           # pure logic, under 2 minutes
    python -m pytest -m integration    # tiny models, stages in-process, servers on 127.0.0.1
    python -m pytest -m slow           # the real CLI through whole pipelines (minutes)
    python -m pytest                   # every tier (what .ci/run calls)
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["LIFECYCLE_NO_PROGRESS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

TIERS = ("unit", "integration", "slow")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything, so every collected test is checked
def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"  {item.nodeid}: {', '.join(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            f"every test needs exactly one tier marker of {', '.join(TIERS)} (module `pytestmark = "
            "pytest.mark.unit`, or per test where a module mixes tiers; see tests/conftest.py):\n" + "\n".join(wrong))


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("lifecycle-home")
    os.environ["LIFECYCLE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def torch_one_thread():
    import torch

    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="session")
def base_artifact():
    from lifecycle.models import resolve

    return resolve("tiny-arith")


@pytest.fixture(scope="session")
def hf_engine(base_artifact, torch_one_thread):
    from lifecycle.engine import load_engine

    return load_engine(base_artifact)


@pytest.fixture(scope="session")
def sft_adapter(tmp_path_factory, base_artifact, torch_one_thread):
    """A short LoRA SFT on the built-in base: enough to test DPO, merge and adapter loading."""
    from lifecycle.artifact import Artifact
    from lifecycle.train import sft

    out = tmp_path_factory.mktemp("sft") / "adapter"
    cfg = sft.SFTConfig(model=str(base_artifact.path), max_steps=8, batch_size=8, n_examples=64,
                        eval_items=20, threads=1)
    return Artifact.load(sft.run(cfg, out))


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory):
    """`get(name) -> Path`: a tiny random-weight checkpoint of a real model family (tests/families.py:
    qwen2, qwen2-chatml, llama3, mistral, phi3), built on first use and shared by the session. Treat the
    folder as read-only; copy it before changing it."""
    from families import FAMILIES, make_checkpoint

    root = tmp_path_factory.mktemp("families")
    built = {}

    def get(name: str):
        if name not in FAMILIES:
            raise KeyError(f"unknown family {name!r}; choose from {FAMILIES}")
        if name not in built:
            built[name] = make_checkpoint(name, root / name)
        return built[name]

    return get

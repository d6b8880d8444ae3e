"""Writes the example chat data that `configs/ship-chat.yaml` ships with: sft, pref, kto and prompts JSONL.

    python examples/chat/make_data.py        # rewrites the files (deterministic)

A stand-in for "my JSONL": short questions with concise answers in English, Chinese, German and French.
- sft.jsonl: `{"messages": [...]}`, each question without and with a system message;
- pref.jsonl: the concise answer (chosen) against a padded, evasive one (rejected), the style a release
  typically aligns away from;
- kto.jsonl: the same answers unpaired, `{"prompt", "completion", "label"}` (align --method kto);
- prompts.jsonl: the questions alone, `{"prompt"}` (align --method grpo / rloo with reward=concise).
"""

import json
import random
from pathlib import Path

QA = [
    ("What is the boiling point of water at sea level?", "100 °C (212 °F)."),
    ("Name the largest planet in the solar system.", "Jupiter."),
    ("How many days are in a leap year?", "366."),
    ("What gas do plants take in for photosynthesis?", "Carbon dioxide."),
    ("Translate 'thank you' into French.", "Merci."),
    ("What is the capital of Japan?", "Tokyo."),
    ("Give a synonym for 'rapid'.", "Fast."),
    ("How many sides does a hexagon have?", "Six."),
    ("Which language is mainly used to style web pages?", "CSS."),
    ("What does CPU stand for?", "Central processing unit."),
    ("Convert 2 kilometres to metres.", "2,000 metres."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen."),
    ("What is the chemical symbol for gold?", "Au."),
    ("Is 17 a prime number?", "Yes, 17 is prime."),
    ("What is the opposite of 'ancient'?", "Modern."),
    ("Which ocean lies between Africa and Australia?", "The Indian Ocean."),
    ("How do you say 'good morning' in Spanish?", "Buenos días."),
    ("What is the freezing point of water in Fahrenheit?", "32 °F."),
    ("Name a primary colour.", "Red."),
    ("What does HTTP stand for?", "Hypertext Transfer Protocol."),
    ("How many minutes are in two hours?", "120 minutes."),
    ("Which planet is known as the Red Planet?", "Mars."),
    ("What is the plural of 'mouse'?", "Mice."),
    ("Summarise in one word: a very large body of salt water.", "Ocean."),
    ("What is the square root of 81?", "9."),
    ("中国的首都是哪里？", "北京。"),
    ("一年有多少个月？", "十二个月。"),
    ("水的化学式是什么？", "H₂O。"),
    ("请用一个词形容夏天的天气。", "炎热。"),
    ("太阳从哪个方向升起？", "东方。"),
    ("“你好”用英语怎么说？", "Hello。"),
    ("一个星期有几天？", "七天。"),
    ("长城位于哪个国家？", "中国。"),
    ("三角形有几条边？", "三条。"),
    ("请说出一种常见的水果。", "苹果。"),
    ("机器学习属于哪个领域？", "人工智能。"),
    ("地球绕什么转？", "太阳。"),
    ("“快”的反义词是什么？", "慢。"),
    ("Wie heißt die Hauptstadt von Deutschland?", "Berlin."),
    ("Quelle est la couleur du ciel par beau temps ?", "Bleu."),
]
SYSTEM = ["You are a concise assistant.", "Answer briefly.", "你是一个简洁的助手。"]
PADDING = ["Great question! Let me think about this carefully before answering. ",
           "There are many ways to look at this, and it depends on context, but ",
           "这是一个很好的问题，我们需要从多个角度来考虑。"]


def main() -> None:
    rng = random.Random(0)
    here = Path(__file__).parent
    sft, pref = [], []
    for i, (q, a) in enumerate(QA):
        for k in range(2):  # each question twice: without and with a system message
            msgs = ([{"role": "system", "content": rng.choice(SYSTEM)}] if k else []) + [
                {"role": "user", "content": q}, {"role": "assistant", "content": a}]
            sft.append({"messages": msgs})
        pad = PADDING[2] if any("\u4e00" <= c <= "\u9fff" for c in q) else rng.choice(PADDING[:2])
        pref.append({"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
                     "rejected": [{"role": "assistant", "content": pad + a}]})
    rng.shuffle(sft)
    kto = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
           for p in pref for side in ("chosen", "rejected")]
    prompts = [{"prompt": p["prompt"]} for p in pref]
    for name, rows in (("sft.jsonl", sft), ("pref.jsonl", pref), ("kto.jsonl", kto), ("prompts.jsonl", prompts)):
        (here / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    main()

"""Build the project's embedded default: a Wikipedia corpus, a byte-level BPE and a tiny
GPT-2 pretrained on it from scratch, all from text that installs from PyPI (gensim).

    python -m harness.embedded.build all        # corpus + tokenizer + model + report
    python -m harness.embedded.build corpus     # tasks/data/{wiki,news} from the gensim wheel
    python -m harness.embedded.build tokenizer  # BPE on the train split (into the model folder)
    python -m harness.embedded.build model      # pretrain + save + report (existing corpus/tokenizer)
    python -m harness.embedded.build report     # re-evaluate the saved model only

Needs the ``build`` extra (gensim). Seeds, data order and thread count are fixed, so a
rerun on the same machine and library versions gives the same files; other CPUs or torch
versions may differ in the last bits of the weights.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "tiny-wiki-gpt2"
DATA_DIR = HERE.parents[1] / "tasks" / "data"
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_FILE = "lee_background.cor"
EOT = "<|endoftext|>"

SEED = 1234
VOCAB, N_POSITIONS, N_EMBD, N_LAYER, N_HEAD, N_INNER = 8192, 512, 256, 4, 4, 1024
# Blocks span the whole context: positions never trained on stay random, and the sliding
# window protocol (window 512, stride 256) scores exactly the later half of each window.
# ~1.35 s per 4,096-token step on 2 idle cores: 600 steps (~4 epochs) take ~14 min (budget 20).
BLOCK, BATCH, STEPS, WARMUP = N_POSITIONS, 8, 600, 40
# A high peak LR and no dropout: at this token budget the model underfits (train and
# validation loss stay together), so regularization only slows it down.
LR, MIN_LR, WEIGHT_DECAY, DROPOUT = 2e-3, 1e-4, 0.1, 0.0
EVAL_WINDOW, EVAL_STRIDE = N_POSITIONS, N_POSITIONS // 2  # the wiki-embedded task's protocol
MIN_ARTICLE_CHARS = 500
# Sections that hold link lists and citations rather than prose.
SKIP_SECTIONS = {"references", "external links", "see also", "further reading", "notes", "bibliography",
                 "footnotes", "sources", "citations", "works cited", "notes and references", "gallery",
                 "other uses", "primary sources", "secondary sources", "general references", "works"}
HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1$")
SENTENCE_END = re.compile(r"[.!?:][\"'”’)\]]*$")


# ----------------------------------------------------------------------------- corpus

def gensim_data(name: str) -> Path:
    import gensim  # the data ships inside the wheel; importing gensim.test.utils would read the lee corpus

    return Path(gensim.__file__).parent / "test" / "test_data" / name


def clean_inline(line: str) -> str:
    """Remove markup that filter_wiki leaves inside a line and the holes its removals leave."""
    line = re.sub(r"'{2,}", "", line)  # bold/italic marks
    line = re.sub(r"<[^>]*>|\{\{[^}]*\}\}|&[a-z]+;", " ", line)  # stray tags, templates, entities
    line = re.sub(r"\(\s*[,;]\s*", "(", line)  # "(; born ..." after a removed template
    line = re.sub(r"\(\s*\)", "", line)  # parentheses whose content was a template
    line = re.sub(r"\s+([,.;:)])", r"\1", line)  # "Greek , i.e." -> "Greek, i.e."
    return re.sub(r"\s{2,}", " ", line).strip()


def is_prose(line: str) -> bool:
    """Table cells, captions, gallery entries and bare list items are short or lack a
    sentence end; a paragraph of prose has neither problem."""
    if "|" in line or line.startswith(("File:", "Image:", "Category:")):
        return False
    letters = sum(ch.isalpha() for ch in line)
    words = len(line.split())
    # Long lines without a sentence end are prose whose last reference/formula was removed.
    return words >= 6 and (words >= 20 or bool(SENTENCE_END.search(line))) and letters >= 0.6 * len(line)


def clean_article(wikitext: str) -> str:
    from gensim.corpora.wikicorpus import filter_wiki

    paragraphs: list[str] = []
    pending: list[tuple[int, str]] = []  # headings waiting for their first paragraph of prose
    skip_level = 0  # level of the link/citation section being skipped, 0 when not skipping
    for raw in filter_wiki(wikitext).split("\n"):
        raw = raw.strip()
        heading = HEADING.match(raw)
        if heading:
            level, title = len(heading.group(1)), clean_inline(heading.group(2))
            if skip_level and level > skip_level:
                continue  # a subsection of a skipped section
            skip_level = level if title.lower() in SKIP_SECTIONS else 0
            pending = [(lvl, t) for lvl, t in pending if lvl < level]
            if not skip_level and title:
                pending.append((level, title))
            continue
        line = clean_inline(raw.lstrip("*#:; "))
        if skip_level or not is_prose(line):
            continue
        paragraphs.extend(t for _, t in pending)  # a heading is kept only if prose follows it
        pending = []
        paragraphs.append(line)
    return "\n\n".join(paragraphs)


def write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))  # mtime=0: same bytes on rerun


def build_corpus() -> dict[str, Any]:
    from gensim.corpora.wikicorpus import extract_pages

    with bz2.open(gensim_data(WIKI_FILE)) as dump:
        articles = [(title, clean_article(text)) for title, text, _ in extract_pages(dump)]
    # Disambiguation pages are link lists; the length floor drops stubs and pages that were all tables.
    articles = [(title, text) for title, text in articles
                if len(text) >= MIN_ARTICLE_CHARS and not title.endswith("(disambiguation)")]
    # Order by a hash of the title, so the split is fixed by the data, not by dump order.
    articles.sort(key=lambda article: hashlib.sha1(article[0].encode("utf-8")).hexdigest())
    n_test, n_val = len(articles) * 10 // 100, len(articles) * 5 // 100
    splits = {"test": articles[:n_test], "validation": articles[n_test:n_test + n_val],
              "train": articles[n_test + n_val:]}
    stats: dict[str, Any] = {}
    for split, rows in splits.items():
        lines = [json.dumps({"title": title, "text": text}, ensure_ascii=False) + "\n" for title, text in rows]
        write_gz(DATA_DIR / "wiki" / f"{split}.jsonl.gz", "".join(lines))
        stats[split] = {"articles": len(rows), "chars": sum(len(text) for _, text in rows),
                        "words": sum(len(text.split()) for _, text in rows)}
    lee = gensim_data(LEE_FILE).read_text(encoding="utf-8")
    write_gz(DATA_DIR / "news" / "lee_background.txt.gz", lee)
    stats["news"] = {"articles": len(lee.splitlines()), "chars": len(lee)}
    print(json.dumps(stats, indent=1))
    return stats


def read_split(split: str) -> list[str]:
    with gzip.open(DATA_DIR / "wiki" / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


# -------------------------------------------------------------------------- tokenizer

def build_tokenizer(out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # all 256 bytes: no unknowns
    bpe.train_from_iterator(read_split("train"), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    # Rebuilt as transformers' GPT-2 class so AutoTokenizer gives the familiar GPT-2 tokenizer.
    tokenizer = GPT2Tokenizer(vocab=state["vocab"], merges=[tuple(m) for m in state["merges"]], pad_token=EOT,
                              model_max_length=N_POSITIONS)
    assert len(tokenizer) == VOCAB, len(tokenizer)
    tokenizer.save_pretrained(out)
    return tokenizer


# ------------------------------------------------------------------------------ model

def lr_at(step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to MIN_LR at the last step."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * progress))


def token_stream(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Articles concatenated with <|endoftext|> after each one (GPT-2's document separator)."""
    ids: list[int] = []
    for encoded in tokenizer(texts, verbose=False)["input_ids"]:
        ids += encoded + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def block_loss(model: Any, data: torch.Tensor) -> float:
    """Mean loss over consecutive BLOCK-token chunks (a quick validation signal)."""
    model.eval()
    blocks = data[: len(data) // BLOCK * BLOCK].view(-1, BLOCK)
    losses = [model(input_ids=b, labels=b).loss.item() for b in blocks.split(BATCH)]
    model.train()
    return sum(losses) / len(losses)


def pretrain(out: Path, steps: int) -> dict[str, Any]:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(out)
    eot = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=VOCAB, n_positions=N_POSITIONS, n_embd=N_EMBD, n_layer=N_LAYER,
                        n_head=N_HEAD, n_inner=N_INNER, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
                        resid_pdrop=DROPOUT, embd_pdrop=DROPOUT, attn_pdrop=DROPOUT)
    model = GPT2LMHeadModel(config)
    train, val = token_stream(tokenizer, read_split("train")), token_stream(tokenizer, read_split("validation"))
    # Weight decay on matrices only; biases and LayerNorm gains stay free (as in GPT-2/nanoGPT).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95))
    # Random block offsets from a seeded generator: a fixed order, and a fresh cut each epoch.
    generator = torch.Generator().manual_seed(SEED)
    curve: list[dict[str, float]] = []
    model.train()
    start = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps)
        offsets = torch.randint(0, len(train) - BLOCK, (BATCH,), generator=generator)
        batch = torch.stack([train[o : o + BLOCK] for o in offsets.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step:4d} loss {loss.item():.3f} lr {lr_at(step, steps):.2e} {time.time() - start:6.0f}s", flush=True)
        if (step + 1) % max(1, steps // 5) == 0 or step == steps - 1:
            curve.append({"step": step + 1, "train_loss": round(loss.item(), 4),
                          "val_loss": round(block_loss(model, val), 4), "seconds": round(time.time() - start, 1)})
            print(f"  validation loss {curve[-1]['val_loss']:.3f}", flush=True)
    wall = time.time() - start
    model.half().save_pretrained(out)  # transformers 5 always writes safetensors; fp16 halves the file
    return {"train_tokens": len(train), "steps": steps, "batch": BATCH, "block": BLOCK,
            "tokens_seen": steps * BATCH * BLOCK, "epochs": round(steps * BATCH * BLOCK / len(train), 2),
            "lr": LR, "min_lr": MIN_LR, "warmup": WARMUP, "weight_decay": WEIGHT_DECAY, "dropout": DROPOUT, "seed": SEED,
            "threads": torch.get_num_threads(), "train_wall_seconds": round(wall, 1), "curve": curve}


# ----------------------------------------------------------------------------- report

@torch.no_grad()
def sliding_nll(model: Any, ids: torch.Tensor, window: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL of every token after the first, each scored once with at least
    window - stride tokens of context (the first window excepted); returns (nll, targets)."""
    nlls, targets, scored_to = [], [], 1  # token 0 has no context, so scoring starts at 1
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        chunk = ids[begin:end]
        logits = model(input_ids=chunk[None]).logits[0, :-1].float()
        nll = F.cross_entropy(logits, chunk[1:], reduction="none")
        keep = slice(max(0, scored_to - begin - 1), None)  # prediction j is for token begin + j + 1
        nlls.append(nll[keep])
        targets.append(chunk[1:][keep])
        scored_to = end
        if end == len(ids):
            break
    return torch.cat(nlls), torch.cat(targets)


def perplexity_entry(nll: torch.Tensor, **protocol: Any) -> dict[str, Any]:
    loss = nll.double().mean().item()
    return {**protocol, "tokens_scored": len(nll), "loss": round(loss, 4), "perplexity": round(math.exp(loss), 2)}


def report(out: Path, train_stats: dict[str, Any] | None = None) -> dict[str, Any]:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = GPT2LMHeadModel.from_pretrained(out, dtype=torch.float32).eval()  # the shipped fp16 file, fp32 compute
    # Test articles joined by "\n\n" and tokenized at once, as the wiki-embedded task does.
    test = torch.tensor(tokenizer("\n\n".join(read_split("test")), verbose=False)["input_ids"])
    sliding, targets = sliding_nll(model, test, EVAL_WINDOW, EVAL_STRIDE)
    blocks, _ = sliding_nll(model, test, EVAL_WINDOW, EVAL_WINDOW)
    # Unigram baseline on the same scored tokens: train-split token counts, add-one smoothing.
    counts = torch.bincount(token_stream(tokenizer, read_split("train")), minlength=VOCAB).double() + 1
    unigram = -(counts / counts.sum()).log()[targets]
    prompt = "The history of"
    generated = model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=48, do_sample=False,
                               pad_token_id=tokenizer.eos_token_id)
    previous_path = out / "build_report.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else {}
    corpus = {split: len(read_split(split)) for split in ("train", "validation", "test")}
    stats = {
        "corpus_articles": corpus,
        "training": train_stats or previous.get("training"),  # a report-only run keeps the training record
        "test": {
            "metric": "token-level perplexity, test split articles joined by '\\n\\n' (the wiki-embedded task protocol)",
            "weights": "model.safetensors (fp16) loaded in float32",
            "sliding_window": perplexity_entry(sliding, window=EVAL_WINDOW, stride=EVAL_STRIDE),
            "non_overlapping": perplexity_entry(blocks, window=EVAL_WINDOW, stride=EVAL_WINDOW),
            "unigram_baseline": perplexity_entry(unigram, counts="train split, add-one over 8192 tokens"),
        },
        "sample": {"prompt": prompt, "greedy_48_tokens": tokenizer.decode(generated[0])},
        "model": {"parameters": sum(p.numel() for p in model.parameters()),
                  "file_bytes": (out / "model.safetensors").stat().st_size},
        "versions": _versions(),
    }
    previous_path.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({key: stats[key] for key in ("test", "sample", "model")}, indent=1, ensure_ascii=False))
    return stats


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("torch", "transformers", "tokenizers", "gensim"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # gensim is needed by the corpus stage only
            pass
    return versions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["all", "corpus", "tokenizer", "model", "report"])
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps (default %(default)s)")
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="model folder (default: the shipped one)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "corpus"):
        build_corpus()
    if args.stage in ("all", "tokenizer"):
        build_tokenizer(args.out)
    if args.stage in ("all", "model"):
        report(args.out, pretrain(args.out, args.steps))
    if args.stage == "report":
        report(args.out)


if __name__ == "__main__":
    main()

"""Language modeling on news: the embedded model's domain shift from Wikipedia to news."""

from __future__ import annotations

import gzip
from typing import Any

from harness.registry import TASKS
from harness.task import MissingSplitError
from tasks._data import EMBEDDED_DATA, files_identity, news_split
from tasks._lm import LanguageModelingTask

NEWS_FILE = EMBEDDED_DATA / "news" / "lee_background.txt.gz"
SPLITS = ("train", "validation", "test")


def news_articles(split: str) -> list[str]:
    """The Lee corpus' articles of ``split`` (tasks/data/news: 300 ABC news articles, one
    per line), split 80/10/10 by a content hash, in file order."""
    with gzip.open(NEWS_FILE, "rt", encoding="utf-8") as handle:
        articles = [line.strip() for line in handle if line.strip()]
    return [article for article in articles if news_split(article) == split]


@TASKS.register("news-embedded")
class NewsEmbedded(LanguageModelingTask):
    """Language modeling on held-out news articles (gensim's Lee corpus, text the embedded model never saw): token-level sliding-window perplexity."""

    defaults: dict[str, Any] = {**LanguageModelingTask.lm_defaults}

    def data_identity(self) -> dict[str, Any]:
        identity = files_identity({"articles": str(NEWS_FILE)}, embedded=True)
        identity["split"] = "80/10/10 by sha256 of each article (tasks._data.news_split)"
        return identity

    def texts(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise MissingSplitError(f"news-embedded has no '{split}' split (has: {', '.join(SPLITS)})")
        return news_articles(split)

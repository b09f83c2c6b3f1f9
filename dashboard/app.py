"""The results dashboard: ``harness dashboard [--db URL] [--port N]``, or
``HARNESS_DB=URL streamlit run dashboard/app.py``. Read-only: every number comes from
``results.queries``. Pages are chosen in the sidebar (``?page=curves`` links to one)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import dashboard  # noqa: F401  (installed with the harness)
except ImportError:  # `streamlit run dashboard/app.py` from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from dashboard import data
from dashboard.views import claims, curves, job, leaderboard, redundancy, significance
from results.store import StoreError

PAGES = {
    "leaderboard": ("Leaderboard", leaderboard.render),
    "curves": ("Curves", curves.render),
    "redundancy": ("Redundancy", redundancy.render),
    "random": ("Is it better than random?", significance.render),
    "claims": ("Claims", claims.render),
    "job": ("Job", job.render),
}


def sidebar(url: str) -> data.Selection | None:
    """Page, task and model choices; None when there is nothing to choose from."""
    with st.sidebar:
        st.title("Pruning benchmark")
        keys = list(PAGES)
        requested = st.query_params.get("page", keys[0])
        page = st.radio("Page", keys, index=keys.index(requested) if requested in keys else 0,
                        format_func=lambda k: PAGES[k][0], key="page")
        st.query_params["page"] = page
        if st.button("Refresh", help="re-read the database (it refreshes by itself every few seconds)"):
            data.refresh()
        st.caption(f"database: `{url}`")
        jobs = data.latest_jobs(url)
        if jobs.empty:
            return None
        tasks = sorted(jobs["task"].unique())
        task = st.selectbox("Task", tasks, key="task")
        models = sorted(jobs.loc[jobs["task"] == task, "model"].unique())
        model = st.selectbox("Model", models, key="model")
    return data.Selection(url, task, model)


def main() -> None:
    st.set_page_config(page_title="Pruning benchmark", page_icon="✂️", layout="wide")
    url = data.configured_url()
    try:
        if not data.has_results(url):
            st.title("Pruning benchmark")
            data.empty_state(url)
            return
        selection = sidebar(url)
    except StoreError as error:
        st.error(f"Cannot read the results database: {error}")
        return
    if selection is None:
        st.title("Pruning benchmark")
        data.empty_state(url, "No jobs yet")
        return
    PAGES[st.session_state["page"]][1](selection)


main()

"""Page 4: is a method better than random? Paired differences per method, sparsity and
group (``results.compare.comparisons``, the numbers ``harness compare`` prints): Holm
over the page's family, Bonferroni-simultaneous intervals, a forest plot and the table."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data
from dashboard.data import Selection
from results.compare import display_table, family_caption
from results.stats import ALPHA

BASELINE = "random"


def render(selection: Selection) -> None:
    st.header("Is it better than random?")
    data.task_note(selection.url, selection.task)
    default = data.headline(selection.url, selection.task, selection.model)
    picked = data.pick_metric(selection, key="significance_metric", default=default)
    if picked is None:
        return
    metrics, (metric, split, higher) = picked
    done = metrics.drop_duplicates("job_id")
    if BASELINE not in set(done["method"]):
        st.info("No `random` jobs to compare with: add `random` to the matrix's methods (same sparsities and seeds).")
        return
    random_labels = sorted(set(done.loc[done["method"] == BASELINE, "method_label"]))
    labels = sorted(set(done.loc[(done["sparsity"] > 0) & ~done["method"].isin(["dense", "pretrained"]), "method_label"]))
    baseline = st.selectbox("Baseline", random_labels + [l for l in labels if l not in random_labels],
                            key="significance_baseline")
    result = data.comparisons(selection.url, selection.task, selection.model, metric, split, baseline)
    if result.empty:
        st.info(f"No job pairs with `{baseline}`: pairs need the same model, task, sparsity, seed and settings.")
        return
    m = int(result["m"].iloc[0])
    st.caption(
        f"{family_caption(metric, split, higher, baseline, m)}. Jobs are grouped by every setting but the seed: a "
        "method run with other settings (steps, distillation, decoding, ...) is its own row with its own n, and "
        "*settings diff* names what differs. Holm is more powerful than Bonferroni, so a verdict can say "
        "significant while its simultaneous interval still touches 0; the verdict says so when that happens. "
        "Same numbers as `harness compare`.")
    st.altair_chart(charts.forest(result, baseline), width="stretch")
    for row in result.itertuples(index=False):
        interval = "" if row.n < 2 else f", {row.ci_level:.2%} simultaneous interval [{row.ci_low:+.4g}, {row.ci_high:+.4g}]"
        settings = f" [{row.settings}]" if row.settings else ""
        st.markdown(f"- **{row.method_label}** at sparsity {row.sparsity:g}{settings}: {row.verdict} "
                    f"(mean difference {row.mean_diff:+.4g}{interval}; raw p {row.p_raw:.3g}, Holm p {row.p_holm:.3g}, "
                    f"m = {row.m})")
    st.dataframe(display_table(result), hide_index=True, width="stretch")
    st.download_button("Download CSV", result.to_csv(index=False).encode(), mime="text/csv",
                       file_name=f"compare-{selection.task}-{metric}.csv".replace("/", "_"), key="significance_csv")
    st.caption(f"α = {ALPHA:g} for the family of m = {m} tests.")

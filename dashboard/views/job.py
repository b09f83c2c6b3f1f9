"""Page 5: one job — spec, protocol, metrics, training curves, samples, traceback."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data
from dashboard.data import Selection


def job_label(row) -> str:
    return f"{row.spec_hash[:12]} · {row.method_label} · s={row.sparsity:g} · seed={row.seed} · {row.status}"


def render(selection: Selection) -> None:
    st.header("Job")
    data.task_note(selection.url, selection.task)
    jobs = data.latest_jobs(selection.url, selection.task, selection.model)
    if jobs.empty:
        st.info("No jobs for this task and model.")
        return
    jobs = jobs.sort_values(["sparsity", "method_label", "seed"]).reset_index(drop=True)
    wanted = st.query_params.get("job", "")  # a spec-hash prefix, e.g. from a shared link
    matches = [i for i, h in enumerate(jobs["spec_hash"]) if wanted and h.startswith(wanted)]
    index = st.selectbox("Job (latest attempt of each spec)", range(len(jobs)), index=matches[0] if matches else 0,
                         format_func=lambda i: job_label(jobs.iloc[i]), key="job_choice")
    job_id = int(jobs.iloc[index]["job_id"])
    record = data.job_record(selection.url, job_id)
    if record is None:
        st.warning("This job is no longer in the database.")
        return
    st.markdown(f"**{record['method_label']}** · sparsity {record['sparsity']:g} · seed {record['seed']} · "
                f"attempt {record['attempt']} · status **{record['status']}** · spec `{record['spec_hash'][:12]}`")
    st.caption(f"created {record['created_at']} · started {record['started_at']} · finished {record['finished_at']} · "
               f"harness {record['harness_version']}")
    if record["status"] in ("failed", "interrupted"):
        st.error(record["error"] or record["status"])
        if record["traceback"]:
            st.code(record["traceback"], language="text")

    metrics = data.job_rows(selection.url, job_id, "metrics")
    if not metrics.empty:
        st.subheader("Metrics")
        st.dataframe(metrics, hide_index=True, width="stretch")
    curves = data.job_rows(selection.url, job_id, "curves")
    if not curves.empty:
        st.subheader("Training curves")
        st.altair_chart(charts.training_curves(curves))
    samples = data.job_rows(selection.url, job_id, "samples")
    if not samples.empty:
        st.subheader("Sample generations")
        st.dataframe(samples, hide_index=True, width="stretch")
    layers = data.job_rows(selection.url, job_id, "layer_stats")
    if not layers.empty:
        st.subheader("Per-layer numbers")
        st.dataframe(layers.pivot(index="layer", columns="name", values="value"), width="stretch")

    left, right = st.columns(2)
    with left:
        st.subheader("Spec")
        st.json(record["spec"], expanded=False)
    with right:
        st.subheader("Protocol")
        st.json(record["protocol"], expanded=False)
        st.subheader("Library versions")
        st.json(record["versions"], expanded=False)

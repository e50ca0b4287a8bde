"""HTML report with embedded PNG plots (one self-contained file):

- per constrained NMT stage: each task's training loss, the held-out loss the multipliers follow
  (against the frozen validation value) and the multipliers lambda over the stage's steps (the
  paper's Fig. 3);
- primary-vs-secondary test AUC: the static weight grid as a line, NMT as a star, the other methods
  as points (the paper's Fig. 2);
- a table of every method's AUC / logloss / gAUC, and the constraint audit of every stage.
"""
from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if len(x) < window or window < 2:
        return x
    return np.convolve(x, np.ones(window) / window, mode="valid")


def stage_curves(stage: dict, hist: dict, tasks: list[str]) -> str:
    """Training loss of every task, the held-out loss of every constrained task against its frozen
    validation value (when the multipliers followed held-out batches) and lambda over one stage's steps.
    `stage`: the stage's summary in report.json; `hist`: its per-step history."""
    loss = np.asarray(hist["loss"], dtype=float)
    window = max(1, len(loss) // 50)
    held = np.asarray(hist.get("held_out", []), dtype=float)
    checks = hist.get("paired", [])
    middle = bool(len(held) or checks)
    fig, axes = plt.subplots(1, 3 if middle else 2, figsize=(15 if middle else 10, 3.2))
    a, b = axes[0], axes[-1]
    for i, t in enumerate(tasks[:loss.shape[1]]):
        a.plot(_smooth(loss[:, i], window), label=t)
    a.set(title=f"stage {tasks.index(stage['task']) + 1} ({stage['task']}): batch loss (moving mean)",
          xlabel="step", yscale="log")
    a.legend()
    for t, v in stage.get("frozen_optima", {}).items():
        if t != stage["task"]:
            a.axhline(v, ls=":", color="gray")
    if len(held):
        c = axes[1]
        for row in stage.get("constraint_audit", []):
            i = tasks.index(row["task"])
            line, = c.plot(_smooth(held[:, i], 4 * window), label=f"{row['task']} (held-out)")
            c.axhline(row["frozen_valid_loss"], ls=":", color=line.get_color())
        c.set(title="constrained tasks: held-out loss vs frozen (dotted)", xlabel="step")
        c.legend()
    elif checks:  # paired: each check's mean loss change over its standard error
        c = axes[1]
        for key in checks[0]["mean"]:
            t = [row["mean"][key] / row["se"][key] if row["se"][key] > 0 else 0.0 for row in checks]
            c.plot([row["step"] for row in checks], t, marker=".", label=tasks[int(key)])
        c.set(title="constrained tasks: paired loss change / SE (validation)", xlabel="step")
        c.legend()
    lam = hist["lambda"]
    for key in (lam[0] if lam else {}):
        b.plot([row[key] for row in lam], label=f"λ {tasks[int(key)]}")
    b.set(title="Lagrange multipliers", xlabel="step")
    if lam and lam[0]:
        b.legend()
    return _png(fig)


def auc_tradeoff(report: dict) -> str:
    """Primary vs secondary test AUC: grid as a line, NMT as a star."""
    t1, t2 = report["tasks"][:2]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    grid = sorted(((float(k.split(":")[1]), m) for k, m in report["methods"].items() if k.startswith("weight_grid:")),
                  key=lambda x: x[0])
    if grid:
        ax.plot([m["auc"][t2] for _, m in grid], [m["auc"][t1] for _, m in grid], "o-", color="gray",
                label="static weight grid")
        for w, m in grid:
            ax.annotate(f"w1={w:g}", (m["auc"][t2], m["auc"][t1]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    for name, m in report["methods"].items():
        if name.startswith("weight_grid:") or m["auc"].get(t2) is None:
            continue
        style = {"nmt": dict(marker="*", s=260, color="crimson", zorder=5)}.get(name, dict(marker="D", s=40))
        ax.scatter(m["auc"][t2], m["auc"][t1], label=name, **style)
    single = report["methods"].get("single_task", {}).get("auc", {}).get(t1)
    if single is not None:
        ax.axhline(single, ls="--", color="green", label="single task (primary)")
    ax.set(xlabel=f"{t2} AUC (secondary)", ylabel=f"{t1} AUC (primary)", title="priority trade-off (test)")
    ax.legend(fontsize=7)
    return _png(fig)


def _fmt(x) -> str:
    return "–" if x is None or x != x else f"{x:.4f}"


def methods_table(report: dict) -> str:
    tasks = report["tasks"]
    head = "".join(f"<th>{html.escape(t)} {m}</th>" for m in ("AUC", "logloss", "gAUC") for t in tasks)
    rows = []
    for name, m in report["methods"].items():
        cells = "".join(f"<td>{_fmt(m[k].get(t))}</td>" for k in ("auc", "logloss", "gauc") for t in tasks)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    if "oracle_auc" in report:
        cells = "".join(f"<td>{_fmt(report['oracle_auc'].get(t))}</td>" for t in tasks)
        rows.append(f"<tr><th>oracle</th>{cells}<td colspan={2 * len(tasks)}></td></tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"


def audit_table(stages: list[dict], key: str = "constraint_audit") -> str:
    """One row per (stage, higher task). Paired rows (components/train/paired.py): the mean per-row loss
    change against the frozen model on the same rows, z standard errors as the tolerance, t = mean / SE;
    older rows: the validation loss against the frozen value plus a fixed tolerance."""
    rows = []
    for k, s in enumerate(stages):
        for a in s.get(key) or []:
            flag = "<b style='color:crimson'>BREACH</b>" if a["breach"] else "ok"
            if a.get("judged_by") == "auc":  # a ranking task (nmt.rank_by_auc): the AUC it lost decides
                flag += f" (by AUC, tolerance {_fmt(a['auc_tolerance'])})"
            if s.get("fallback"):  # components/train/fallback.py
                flag += " (fell back to the previous stage's model)"
            paired = "t" in a
            change = a["mean_loss_change"] if paired else a["valid_loss"] - a["frozen_valid_loss"]
            auc_now, auc_then = (a["auc"], a["frozen_auc"]) if paired else (a["valid_auc"], a["frozen_valid_auc"])
            rows.append(f"<tr><td>{k + 1} ({html.escape(s['task'])})</td><td>{html.escape(a['task'])}</td>"
                        f"<td>{_fmt(change)}</td><td>{_fmt(a['tolerance'])}</td>"
                        f"<td>{_fmt(a['t']) if paired else '–'}</td><td>{_fmt(auc_now)}</td><td>{_fmt(auc_then)}</td>"
                        f"<td>{_auc_change(a)}</td>"
                        f"<td>{_fmt(a['lambda_final'])}</td><td>{flag}</td></tr>")
    if not rows:
        return "<p>one task: nothing constrained</p>"
    return ("<table><tr><th>stage</th><th>constrained task</th><th>loss change</th><th>tolerance</th><th>t (SE)</th>"
            "<th>AUC</th><th>frozen AUC</th><th>AUC change ± SE (DeLong, paired)</th><th>final λ</th><th>audit</th></tr>"
            + "".join(rows) + "</table>")


def _auc_change(a: dict) -> str:
    """The paired AUC change with DeLong's standard error, where the frozen model's scores were kept."""
    if a.get("auc_se") is None:
        return "–"
    return f"{a['auc_change_paired']:+.4f} ± {a['auc_se']:.4f}"


def render(report: dict, histories: list[dict | None], title: str = "nmtrec report") -> str:
    """`histories`: each NMT stage's per-step history, in report["stages"] order (None: not available)."""
    tasks = report["tasks"]
    curves = "".join(stage_curves(s, h, tasks) for s, h in zip(report["stages"][1:], histories[1:]) if h)
    tradeoff = auc_tradeoff(report) if len(tasks) >= 2 else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:right}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(title)}</h1><p>tasks in priority order: {html.escape(' > '.join(tasks))}</p>
<h2>Test metrics of every method</h2>{methods_table(report)}
<h2>Priority trade-off</h2>{tradeoff}
<h2>NMT stages: losses and multipliers</h2>{curves or '<p>one task: no constrained stage</p>'}
<h2>Constraint audit (validation)</h2>{audit_table(report['stages'])}
<h2>Constraint audit out of sample (test split, paired with the frozen model)</h2>{audit_table(report['stages'], 'test_audit')}
</body></html>"""

"""``irm-lens profile`` of the IRMs' dominant index and of the host's top massive-activation dim.

Everything ``irm_lens.interventions.index_profile`` measures (norm gains per layer, magnitude
by token kind, Sun et al. massive dims, the norm lever against magnitude-matched controls), for
the index that ranks first in most trained runs and for the host's largest massive dim (507 on
SmolLM2).
"""

from __future__ import annotations

import pandas as pd

from analyses._common import Context
from analyses._written import write_result
from irm_lens.interventions.index_profile import IndexProfile, index_profile
from irm_lens.plotting.profile import index_profile_result_figure
from irm_lens.prompts import PAPER_PROMPTS


def _long(result: IndexProfile, role: str) -> pd.DataFrame:
    """One long table of a profile: every table's rows with ``table`` and ``profiled`` columns."""
    parts = [t.assign(table=name) for name, t in result.tables().items() if not t.empty]
    return pd.concat(parts, ignore_index=True).assign(profiled=result.index, role=role)


def main(ctx: Context) -> dict[str, object]:
    chosen = {"IRM dominant index": ctx.dominant_index}
    if ctx.massive_index is not None and ctx.massive_index != ctx.dominant_index:
        chosen["host's top massive dim"] = ctx.massive_index
    results = {
        role: index_profile(ctx.host(), list(PAPER_PROMPTS), index, progress=ctx.progress)
        for role, index in chosen.items()
    }
    data = pd.concat([_long(r, role) for role, r in results.items()], ignore_index=True)
    summary: dict[str, object] = {role: r.summary() for role, r in results.items()}
    for role, result in results.items():
        fig = index_profile_result_figure(
            result,
            title=(
                f"{ctx.figures.host_label}, residual index {result.index} ({role}; controls "
                f"{list(result.controls)}, 7 paper prompts)"
            ),
        )
        name = "index_profile" if role == "IRM dominant index" else "index_profile_massive"
        write_result(
            ctx,
            name,
            data[data["role"] == role],
            fig,
            summary=summary,
            runs=[ctx.untrained],
            size=(1300, 900),
            settings={"indices": chosen},
        )
    return summary

"""d6tflow's example pipeline (get_data -> preprocess -> train), shared by the test modules."""

from __future__ import annotations

import asyncflow as af


@af.task
async def get_data(n: int = 10) -> list[int]:
    return list(range(n))


@af.task(format="pickle")
async def preprocess(raw: list[int] = af.depends(get_data), do_preprocess: bool = True) -> list[int]:
    return [x * 2 for x in raw] if do_preprocess else raw


@af.task
async def train(df: list[int] = af.depends(preprocess)) -> dict:
    return {"n": len(df), "total": sum(df)}

"""Exact reference for :mod:`PASegLib.seeds.geodesic`: Dijkstra on the same 26-neighbour graph and step cost.

Slow and memory-heavy; used by the tests and ``benchmarks/bench_expansion.py`` to check the raster scan.

Relation to GeodisTK: its raster scan (non-seeds start at 1e10) runs a fixed number of iterations (PA-Seg's
official code: 4), each a forward and a backward raster pass over 13 neighbours. Iterated long enough it
reaches the same fixed point; with few iterations it is an upper bound of the converged value, loose where
shortest paths wind. GeodisTK takes arrays in the order given (here ``[i, j, k]``, spacing in the same
order), a float32 image with channels last, and uint8 seeds.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from PASegLib.seeds.geodesic import HALF_OFFSETS, edge_cost, validate_inputs

__all__ = ["dijkstra_geodesic_distance"]


def dijkstra_geodesic_distance(
    image: Any, seeds: Any, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), lamb: float = 0.5
) -> np.ndarray:
    """Exact reference: the same distance by ``scipy.sparse.csgraph.dijkstra`` on the 26-graph (float64).

    Slow and memory-heavy (a sparse matrix with 13 edges per voxel, ~0.5 kB per voxel with temporaries):
    meant for tests and benchmarks on small volumes. Arguments and return as :func:`geodesic_distance`
    (returns float64).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    img, mask, sp, lam = validate_inputs(image, seeds, spacing, lamb)
    shape = img.shape[1:]
    index = np.arange(int(np.prod(shape))).reshape(shape)
    rows, cols, vals = [], [], []
    for d in HALF_OFFSETS:
        cost, p_sl, q_sl = edge_cost(img, d, sp, lam)
        rows.append(index[p_sl].ravel())
        cols.append(index[q_sl].ravel())
        vals.append(cost.ravel())
    graph = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (index.size,) * 2
    )
    dist = dijkstra(graph.tocsr(), directed=False, indices=index[mask], min_only=True)
    return dist.reshape(shape)

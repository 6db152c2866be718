"""Numba kernel of the per-slice area opening (tophat.py explains the choice of algorithm).

Kept in its own module so that importing :mod:`wmhflow.preprocess.tophat` does not import numba, and
so that numba's on-disk cache (``cache=True``) holds one module-level function.

The kernel is a max-tree flooding in the manner of Salembier et al. (1998) with the non-recursive
component stack of Nistér & Stewénius ("Linear time maximally stable extremal regions", ECCV 2008),
turned upside down (bright first) and with the area filter folded in:

* from a seed, the flood always moves on to an unseen neighbour that is brighter than the current
  pixel (pushing a new component on the stack); otherwise neighbours wait in a 256-bucket priority
  queue and the brightest waiting pixel is taken next. When the level drops, the components on the
  stack above the new level are closed: each closed node of the component tree records its level,
  its area (pixels of the node and all its descendants) and its parent node;
* after the slice is flooded, the nodes are visited parents first (the reverse of the order in which
  they were closed): a node keeps its level when its area is at least ``lam``, else takes its
  parent's output; every pixel then reads the output of its node.

Pixels at the slice minimum are never flooded: they keep their value and no component above the
minimum crosses them, so each connected component of ``{f > min}`` is flooded on its own from a seed
and its root's parent is the whole slice at the minimum level (area = the slice; ``lam`` larger than
the whole slice is handled before, as scikit-image does: everything opens to 0). Each slice is copied
into a buffer padded by one "already seen" pixel on every side, so the neighbour loop has no bounds
checks. Every node owns at least one pixel, so at most ``H*W`` nodes exist.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def open_slices(volume, out, first, last, lam, eight):  # noqa: C901 - one tight kernel
    """Area opening of ``volume[first:last]`` (shape (slices, H, W), uint8, any strides) into ``out``."""
    nh, nw = volume.shape[1], volume.shape[2]
    n = nh * nw
    pw = nw + 2
    npad = (nh + 2) * pw
    f = np.zeros(npad, np.uint8)  # padded slice
    seen = np.ones(npad, np.uint8)  # 1: flooded, queued, at the slice minimum or padding
    node_of = np.empty(npad, np.int32)  # pixel -> its component-tree node
    nxt = np.empty(npad, np.int32)  # priority queue: one linked stack per grey level
    head = np.empty(256, np.int32)
    nlevel = np.empty(n + 1, np.uint8)  # node -> grey level
    narea = np.empty(n + 1, np.int32)  # node -> area (pixels of the node and its descendants)
    nparent = np.empty(n + 1, np.int32)  # node -> parent node (-1: the slice at its minimum level)
    nout = np.empty(n + 1, np.uint8)  # node -> opened value
    closed = np.empty(n + 1, np.int32)  # nodes in the order they were closed (children first)
    stack = np.empty(n + 1, np.int32)  # open components, darkest at the bottom
    hist = np.empty(256, np.int64)
    offs = np.array([-pw, -1, 1, pw, -pw - 1, -pw + 1, pw - 1, pw + 1], np.int64)
    nnb = 8 if eight else 4
    for k in range(first, last):
        hist[:] = 0
        for i in range(nh):
            row = (i + 1) * pw + 1
            for j in range(nw):
                v = volume[k, i, j]
                f[row + j] = v
                hist[v] += 1
        if n < lam:  # no level set component reaches the threshold, not even the whole slice
            for i in range(nh):
                for j in range(nw):
                    out[k, i, j] = 0
            continue
        lo = 0
        while hist[lo] == 0:
            lo += 1
        if lam <= 1:  # every component has at least one pixel: nothing is removed
            for i in range(nh):
                for j in range(nw):
                    out[k, i, j] = volume[k, i, j]
            continue
        for i in range(nh):
            row = (i + 1) * pw + 1
            for j in range(nw):
                seen[row + j] = f[row + j] <= lo
        head[:] = -1
        nn = 0  # nodes created
        nc = 0  # nodes closed
        for i in range(nh):
            row = (i + 1) * pw + 1
            for j in range(nw):
                seed = row + j
                if seen[seed]:
                    continue
                # Flood the connected component of {f > lo} holding the seed.
                seen[seed] = 1
                cur = seed
                lvl = f[seed]
                nlevel[nn] = lvl
                narea[nn] = 0
                stack[0] = nn
                sp = 1
                nn += 1
                hmax = 0
                queued = 0
                while True:
                    moved = False
                    for e in range(nnb):
                        q = cur + offs[e]
                        if seen[q]:
                            continue
                        seen[q] = 1
                        fq = f[q]
                        if fq > lvl:  # brighter: queue the current pixel, climb into a new component
                            nxt[cur] = head[lvl]
                            head[lvl] = cur
                            queued += 1
                            if lvl > hmax:
                                hmax = lvl
                            cur = q
                            lvl = fq
                            nlevel[nn] = lvl
                            narea[nn] = 0
                            stack[sp] = nn
                            sp += 1
                            nn += 1
                            moved = True
                            break
                        nxt[q] = head[fq]
                        head[fq] = q
                        queued += 1
                        if fq > hmax:
                            hmax = fq
                    if moved:
                        continue
                    # Every neighbour of cur is seen: cur belongs to the top component.
                    top = stack[sp - 1]
                    node_of[cur] = top
                    narea[top] += 1
                    if queued == 0:
                        break
                    while head[hmax] < 0:
                        hmax -= 1
                    cur = head[hmax]
                    head[hmax] = nxt[cur]
                    queued -= 1
                    new = f[cur]
                    if new < lvl:  # the level drops: close the components above it
                        while True:
                            top = stack[sp - 1]
                            if sp >= 2 and nlevel[stack[sp - 2]] >= new:
                                below = stack[sp - 2]  # top merges into the darker component below
                                nparent[top] = below
                                narea[below] += narea[top]
                                closed[nc] = top
                                nc += 1
                                sp -= 1
                                if nlevel[below] == new:
                                    break
                            else:  # top goes on at the new level as a new node
                                nlevel[nn] = new
                                narea[nn] = narea[top]
                                nparent[top] = nn
                                closed[nc] = top
                                nc += 1
                                stack[sp - 1] = nn
                                nn += 1
                                break
                    lvl = new
                while sp > 0:  # the whole component is flooded: close what is left on the stack
                    top = stack[sp - 1]
                    sp -= 1
                    if sp > 0:
                        below = stack[sp - 1]
                        nparent[top] = below
                        narea[below] += narea[top]
                    else:
                        nparent[top] = -1
                    closed[nc] = top
                    nc += 1
        # Parents before children: a node keeps its level if large enough, else takes its parent's.
        for idx in range(nc - 1, -1, -1):
            nd = closed[idx]
            if narea[nd] >= lam:
                nout[nd] = nlevel[nd]
            elif nparent[nd] < 0:
                nout[nd] = lo
            else:
                nout[nd] = nout[nparent[nd]]
        for i in range(nh):
            row = (i + 1) * pw + 1
            for j in range(nw):
                p = row + j
                out[k, i, j] = nout[node_of[p]] if f[p] > lo else lo

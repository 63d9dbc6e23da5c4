"""Which training rank holds which row (pure): data per rank that shrinks as ranks are added.

Every training row belongs to one rank: a hash of its image id modulo the number of ranks.
The hash, not the row's position, decides, so a row keeps its rank as the training set grows
from round to round and a node's image cache keeps serving it. A row the recipe repeats (an
oversampled labeled image, `copies` > 1) has its copies spread over the ranks from its own
onwards: with at least as many copies as ranks, every rank holds every labeled image, and the
copies over all ranks are still the recipe's. Each rank materializes and trains on its share
only and reshuffles it every epoch; DDP averages the ranks' gradients, so an epoch is still one
pass over the training rows, as with Ultralytics' own distributed sampler, whatever the number
of ranks (the recipe's epochs, patience and oversampling mean the same on 1 rank and on 64).

DDP needs every rank to take the same number of steps: a share shorter than the longest gets
extra copies of its own rows, spread evenly (with N rows over W ranks, about sqrt(N / W)
copies per rank; none with one rank).
"""

from __future__ import annotations

import hashlib


def rank_of(image_id: str, world: int) -> int:
    """The rank (0..world-1) that trains on the image `image_id`."""
    if world <= 1:
        return 0
    digest = hashlib.blake2b(image_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % world


def spread(image_id: str, copies: int, world: int) -> list[int]:
    """The copies of the row `image_id` on each rank (they sum to `copies`): `copies // world`
    on every rank and one more on each of the `copies % world` ranks from its own onwards."""
    if world <= 1:
        return [copies]
    base, extra = divmod(copies, world)
    out = [base] * world
    home = rank_of(image_id, world)
    for j in range(extra):
        out[(home + j) % world] += 1
    return out


def padding(index: int, rows: int, missing: int) -> int:
    """Extra copies of the `index`-th of a share's `rows` rows that make the share `missing`
    images longer (to the longest share's size): one more copy per row in turn, from the
    first row. A row's extra copies depend on its position alone, so a reader that streams
    the share needs only the count of its rows, not the rows."""
    if missing < 0:
        raise ValueError(f"a share cannot be padded by {missing} images: it is longer than the longest")
    base, extra = divmod(missing, rows) if rows else (0, 0)
    return base + int(index < extra)

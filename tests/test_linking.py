"""TrackLinker on hand-made tracks: who carries on a track that ended, and when a lost track is released."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgepipe.linking import Lineage, Link, TrackLinker
from edgepipe.types import Tracks

FPS = 10.0


def box(x: float, y: float, height: float = 100.0) -> list[float]:
    """A box `height` tall, 40 wide, whose top centre is (x, y)."""
    return [x - 20, y, x + 20, y + height]


def tracks(
    rows: Sequence[tuple[int, Sequence[float]]], ended: Sequence[int] = (), class_ids: Sequence[int] = ()
) -> Tracks:
    n = len(rows)
    return Tracks(
        np.array([r[1] for r in rows], np.float32).reshape(n, 4),
        np.full(n, 0.9, np.float32),
        np.array(class_ids or [0] * n, np.int32),
        np.array([r[0] for r in rows], np.int64),
        np.arange(n, dtype=np.intp),
        np.array(ended, np.int64),
    )


def feed(linker: TrackLinker, frames: Sequence[Tracks]) -> list[Lineage]:
    return [linker.update(t, i / FPS) for i, t in enumerate(frames)]


def walk(track_id: int, x0: float, step: float, n: int, y: float = 0.0) -> list[Tracks]:
    return [tracks([(track_id, box(x0 + step * i, y))]) for i in range(n)]


def links(lineages: Sequence[Lineage]) -> list[tuple[int, int, int]]:
    return [(k.ended_id, k.successor_id, k.origin_id) for lineage in lineages for k in lineage.links]


def test_a_track_found_again_where_the_lost_one_was_heading_carries_it_on() -> None:
    # Walks right at 100 px/s (10 px a frame), is lost for 5 frames, found 50 px further on.
    frames = [*walk(1, 0, 10, 5), tracks([], ended=[1]), *[tracks([])] * 4, tracks([(2, box(100, 0))])]
    lineages = feed(TrackLinker(2.0, 0.75), frames)
    assert links(lineages) == [(1, 2, 1)]
    link = lineages[-1].links[0]
    assert link.heading_xy is not None
    assert np.allclose(link.heading_xy, (60.0, 0.0))  # 100 px/s for the 0.6 s from frame 4 to 10
    assert lineages[-1].origin == {2: 1}
    assert all(not lineage.released for lineage in lineages)


def test_the_gate_is_the_path_from_the_last_sighting_to_where_its_speed_led() -> None:
    lost = [*walk(1, 0, 10, 5), tracks([], ended=[1])]
    # Stopped behind the occluder (at the start of the path), or slowed down (in the middle): linked.
    for x in (40.0, 70.0, 100.0):
        assert links(feed(TrackLinker(2.0, 0.75), [*lost, tracks([(2, box(x, 0))])])) == [(1, 2, 1)]
    # Behind where it was (turned round) or off to the side by more than 0.75 box heights: not linked.
    for x, y in ((-40.0, 0.0), (70.0, 80.0)):
        assert links(feed(TrackLinker(2.0, 0.75), [*lost, tracks([(2, box(x, y))])])) == []


def test_no_link_to_a_much_taller_or_shorter_box_or_another_class() -> None:
    lost = [*walk(1, 0, 10, 5), tracks([], ended=[1])]
    for new in (
        tracks([(2, box(60, 0, 160))]),
        tracks([(2, box(60, 0, 60))]),
        tracks([(2, box(60, 0))], class_ids=[2]),
    ):
        assert links(feed(TrackLinker(2.0, 0.75), [*lost, new])) == []


def test_two_people_side_by_side_each_keep_their_own_predecessor() -> None:
    # 1 and 2 walk right 60 px apart vertically; both are lost, and found again together.
    both = [tracks([(1, box(10 * i, 0)), (2, box(10 * i, 60))]) for i in range(5)]
    found = tracks([(4, box(70, 62)), (3, box(70, 1))])  # listed in the other order on purpose
    assert sorted(links(feed(TrackLinker(2.0, 0.75), [*both, tracks([], ended=[1, 2]), found]))) == [
        (1, 3, 1),
        (2, 4, 2),
    ]


def test_a_lost_track_is_released_after_the_gap_without_a_successor() -> None:
    frames = [*walk(1, 0, 10, 3), tracks([], ended=[1]), *[tracks([])] * 30]
    lineages = feed(TrackLinker(2.0, 0.75), frames)
    released = [i for i, lineage in enumerate(lineages) if lineage.released]
    assert released == [23]  # last seen at 0.2 s; 2.3 s is the first frame more than 2 s later
    assert lineages[23].released == (1,)


def test_without_a_gap_linking_is_off_and_ended_tracks_are_released_at_once() -> None:
    frames = [*walk(1, 0, 10, 3), tracks([(2, box(40, 0))], ended=[1])]
    lineages = feed(TrackLinker(0.0, 0.75), frames)
    assert links(lineages) == []
    assert lineages[-1].released == (1,)
    assert Lineage.unlinked(np.array([5, 6], np.int64)) == Lineage(released=(5, 6))


def test_chains_keep_the_first_id_and_close_releases_what_waits() -> None:
    frames = [
        *walk(1, 0, 10, 3),
        tracks([], ended=[1]),
        *walk(2, 40, 10, 3),
        tracks([], ended=[2]),
        tracks([(3, box(80, 0))]),
        tracks([], ended=[3]),
    ]
    linker = TrackLinker(2.0, 0.75)
    assert links(feed(linker, frames)) == [(1, 2, 1), (2, 3, 1)]
    closing = linker.close()
    assert closing.released == (3,)
    assert closing.origin == {3: 1}  # the exit events it causes still name the chain
    assert linker.close().released == ()


def test_a_new_track_seen_before_the_old_one_ends_is_linked_when_it_ends() -> None:
    # Track 1 is last seen at frame 2; the tracker coasts it and ends it at frame 6. Track 2 shows up
    # at frame 4 further along its path: linked at frame 6, with the gap from 0.2 s to 0.4 s.
    frames = [*walk(1, 0, 10, 3), tracks([]), tracks([(2, box(40, 0))]), tracks([(2, box(50, 0))])]
    frames.append(tracks([(2, box(60, 0))], ended=[1]))
    lineages = feed(TrackLinker(2.0, 0.75), frames)
    assert [i for i, lineage in enumerate(lineages) if lineage.links] == [6]
    assert lineages[6].links == (Link(1, 2, 1, (20.0, 0.0)),)


def test_a_coasting_track_that_fits_better_keeps_a_new_track_from_a_lost_one() -> None:
    # 1 (walking right) is lost at x = 40; 2 (walking left, 100 px/s) was last seen at x = 100 and is
    # still coasting. The new track 3 at x = 95 continues 2 better than 1: it is not given to 1, and
    # when 2 ends, 3 carries 2 on.
    frames = [tracks([(1, box(10 * i, 0)), (2, box(140 - 10 * i, 0))]) for i in range(5)]
    frames += [tracks([], ended=[1]), tracks([(3, box(95, 0))]), tracks([(3, box(90, 0))], ended=[2])]
    lineages = feed(TrackLinker(2.0, 0.75), frames)
    assert [links([lineage]) for lineage in lineages[5:]] == [[], [], [(2, 3, 2)]]


def test_a_track_seen_once_has_no_known_heading() -> None:
    frames = [tracks([(1, box(0, 0))]), tracks([], ended=[1]), tracks([(2, box(20, 0))])]
    lineages = feed(TrackLinker(2.0, 0.75), frames)
    assert lineages[-1].links == (Link(1, 2, 1, None),)

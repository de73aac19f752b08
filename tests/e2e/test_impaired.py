"""Chromium receivers behind a real impaired link (tests/helpers/impaired.py): the harness itself, and what
issue 13 asks the bridge to show with trust-bwe on (its transport-cc estimate sizes each receiver's video).

- The receiver's media really crosses the relay: what its page counts received is what the relay
  delivered towards it.
- A 500 kbit/s cap: within 5 s the bridge allocates the receiver no more than fits and the relay delivers
  no more; after that no freeze longer than 500 ms and no audio loss.
- 2 % random loss: the page NACKs, the bridge retransmits, frames keep being decoded.
- A capacity drop 3 Mbit/s → 300 kbit/s → 3 Mbit/s: down within 3 s of the drop, back at 720p within 15 s
  of the recovery, fewer than 4 layer switches a minute in steady state.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bench.qoe import BridgeSample, Sample, Scorecard, link_points, rate_kbps, samples_json, score, svg_plot
from tests.helpers.impaired import ImpairedCall, impaired_call, sampler, stage
from tests.helpers.netns import Netlab
from tests.helpers.webpage import await_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def test_the_receivers_media_crosses_the_relay(netlab: Netlab, tmp_path: Path) -> None:
    async with impaired_call(netlab, tmp_path, {}) as call:
        sender = await call.join("Ada")
        receiver = await call.join("Grace", receiver=True)
        await await_for(
            receiver.browser,
            "Ada's video decoded",
            lambda s: s.get(sender.nick, {}).get("framesDecoded", 0) > 30,
            "getStats",
        )
        transport = await receiver.browser.acall("transportStats")
        # The selected pair is the bridge's address on the impaired link, the only one the page has.
        assert transport["remote"] == f"{call.link.a_addr}:{call.serve.media[1]}", transport
        assert transport["local"].startswith(f"{call.link.b_addr}:"), transport
        await check_relay_counts_page_bytes(call, receiver.browser)


async def check_relay_counts_page_bytes(call: ImpairedCall, browser: Any) -> None:
    """The bytes the page's transport received grow as the relay's a-to-b bytes out do (the relay counts
    Ethernet frames, the page SRTP payloads: per packet 14 + 20 + 8 bytes more at the relay)."""
    before_page = await browser.acall("transportStats")
    before_relay = call.link.fresh_stats()["directions"]["a-to-b"]
    await asyncio.sleep(3)
    after_page = await browser.acall("transportStats")
    after_relay = call.link.fresh_stats()["directions"]["a-to-b"]
    page_bytes = after_page["bytesReceived"] - before_page["bytesReceived"]
    page_packets = after_page["packetsReceived"] - before_page["packetsReceived"]
    relay_bytes = after_relay["bytes_out"] - before_relay["bytes_out"]
    relay_packets = after_relay["packets_out"] - before_relay["packets_out"]
    assert page_packets > 100, (before_page, after_page)
    # Same packets within what 0.2 s of stats-file age and TCP signalling on the same link make.
    assert abs(relay_packets - page_packets) <= 0.15 * page_packets, (relay_packets, page_packets)
    on_wire = page_bytes + page_packets * (14 + 20 + 8)
    assert abs(relay_bytes - on_wire) <= 0.15 * on_wire, (relay_bytes, on_wire)


def _after(samples: list[Sample], t: float) -> list[Sample]:
    return [s for s in samples if s.t >= t]


def _report(card: Scorecard, samples: list[Sample], tmp_path: Path, name: str) -> str:
    """The figures (and the samples, as JSON and an SVG, beside the test's other files) for a message."""
    (tmp_path / f"{name}.json").write_text(
        json.dumps({"scorecard": card.to_json(), "samples": samples_json(samples)})
    )
    (tmp_path / f"{name}.svg").write_text(svg_plot(samples, name))
    return json.dumps(card.to_json())


async def test_a_500_kbits_cap_gets_only_what_fits(netlab: Netlab, tmp_path: Path) -> None:
    cap = 500
    async with impaired_call(netlab, tmp_path, {"a-to-b": {"rate-kbps": cap, "queue-ms": 200}}) as call:
        staged = await stage(call)
        samples = await sampler(call, staged).run(16)
    card = score(samples, steady_after_s=5)
    figures = _report(card, samples, tmp_path, "cap-500k")
    print(figures)
    settled = _after(samples, 5)
    allocated = [s.bridge.allocated_bps for s in settled if s.bridge and s.bridge.allocated_bps is not None]
    assert allocated and max(allocated) <= cap * 1000, (allocated, figures)
    # What the bridge sent it and what the relay delivered, per second, fit the cap (10 % for 1 s windows
    # over packets of up to 1.2 kB, and RTCP).
    sent = rate_kbps([(s.t, s.bridge.bytes_out) for s in settled if s.bridge])
    # The relay's figures at the times it counted them (the sampler reads them up to 200 ms late).
    delivered = rate_kbps(link_points(settled))
    assert sent and max(r for _, r in sent) <= cap * 1.1, (sent, figures)
    assert delivered and max(r for _, r in delivered) <= cap * 1.05, (delivered, figures)
    after = score(settled)
    assert after.longest_freeze_s < 0.5 and after.longest_stall_s < 0.5, figures
    pages = [s.page for s in settled if s.page]
    assert pages[-1].audio_packets_lost == pages[0].audio_packets_lost, figures
    assert pages[-1].audio_packets_received > pages[0].audio_packets_received, figures


async def test_b_2_percent_loss_is_repaired(netlab: Netlab, tmp_path: Path) -> None:
    async with impaired_call(netlab, tmp_path, {"seed": 7, "a-to-b": {"loss-pct": 2}}) as call:
        staged = await stage(call)
        samples = await sampler(call, staged).run(12)
    card = score(samples)
    figures = _report(card, samples, tmp_path, "loss-2")
    print(figures)
    pages = [s.page for s in samples if s.page]
    bridges = [s.bridge for s in samples if s.bridge]
    assert pages[-1].nack_count > pages[0].nack_count, figures
    assert pages[-1].frames_decoded - pages[0].frames_decoded > 100, figures
    assert max(card.longest_freeze_s, card.longest_stall_s) < 1.0, figures
    assert bridges[-1].retransmitted is not None, figures
    assert bridges[-1].retransmitted > (bridges[0].retransmitted or 0), figures


@pytest.mark.timeout(120)
async def test_c_capacity_drop_and_recovery(netlab: Netlab, tmp_path: Path) -> None:
    # The schedule starts once 720p is decoded (below); 14 s leaves the layers time to settle first.
    drop_at, recover_at, end = 14.0, 22.0, 40.0
    impair = {
        "a-to-b": {
            "rate-kbps": 3000,
            "queue-ms": 200,
            "steps": [{"at-s": drop_at, "rate-kbps": 300}, {"at-s": recover_at, "rate-kbps": 3000}],
        }
    }
    async with impaired_call(netlab, tmp_path, impair) as call:
        staged = await stage(call)
        # The drop is judged from a steady 720p: the schedule starts once the receiver decodes it. How soon
        # that comes after a join is the scorecard's time to 720p (impair-step), not this test's question
        # (a CI run had the estimate fall at the join, three senders' keyframes at once, and 720p at 13 s).
        nick = staged.on_stage.nick
        try:
            await await_for(
                staged.receiver.browser,
                "720p on the receiver's stage",
                lambda st: int(st.get(nick, {}).get("frameHeight") or 0) >= 720,
                "getStats",
                30.0,
            )
        except AssertionError as exc:
            sent = await staged.on_stage.browser.acall("sentVideo")
            # The bridge's side: the receiver's estimate, what it is allocated, and the Allocator's reasons.
            views = {"bandwidth": await call.allocation(), "allocation": await call.decisions()}
            view = views["bandwidth"].get(staged.receiver.nick, {})
            ideal = BridgeSample.from_view(view, f"{nick}-v0").ideal_height
            _skip_if_sender_scaled_down(sent, [ideal] if ideal is not None else [])
            raise AssertionError(f"{exc}\nsender: {sent}\nbridge: {json.dumps(views)[:6000]}") from None
        qs = sampler(call, staged)
        qs.started = call.link.restart_schedule()
        samples = await qs.run(end)
        sent = await staged.on_stage.browser.acall("sentVideo")
    card = score(samples, steady_after_s=5)
    figures = _report(card, samples, tmp_path, "step")
    print(figures)
    try:
        _judge_step(samples, card, figures, drop_at, recover_at)
    except AssertionError:
        judged = [s.bridge.ideal_height for s in _after(samples, drop_at - 2) if s.bridge]
        _skip_if_sender_scaled_down(sent, [h for h in judged if h is not None])
        raise


def _skip_if_sender_scaled_down(sent: list[dict[str, Any]], ideal_heights: list[int]) -> None:
    """On a host too busy for four Chromiums, the sender's own encoder scales its camera down (a 540p top
    layer, 135p at the bottom): then no bridge can bring 720p, and the ladder's change reads as switches. The
    sender's stats say so at the end, or the bridge, which saw the source's best layer (its ideal) below
    720p while the run was judged; then a failed run judges nothing (a limit of bandwidth would: that is
    ours). A run that meets everything passes whatever the sender did."""
    top = max((int(x.get("frameHeight") or 0) for x in sent), default=0)
    if top < 720 and any(x.get("qualityLimitationReason") == "cpu" for x in sent):
        pytest.skip(f"inconclusive: the on-stage sender scaled down for CPU ({top}p at the top): {sent}")
    if ideal_heights and min(ideal_heights) < 720:
        pytest.skip(
            f"inconclusive: the on-stage source's best layer was {min(ideal_heights)}p at the bridge while "
            f"judged (its sender scaled down); at the end it sent {top}p at the top"
        )


def _judge_step(
    samples: list[Sample], card: Scorecard, figures: str, drop_at: float, recover_at: float
) -> None:
    """The issue's capacity step: moved down within 3 s of the drop, 720p again within 15 s of the
    recovery, under 4 layer switches a minute in steady state."""
    # The bridge's allocation of the on-stage source: 720p before the drop, below within 3 s of it. Before
    # is by the relay's own reading of its rate (its schedule and the sampler's clock differ by up to a
    # sample: a run had the link at 300 kbit/s in the sample at 13.9 s, and the bridge already moved).
    before = [
        s.bridge.allocated_height
        for s in samples
        if s.bridge and drop_at - 2 <= s.t < drop_at and s.link and s.link.capacity_kbps == 3000
    ]
    assert before and all(h == 720 for h in before), (before, figures)
    down = next(
        (s.t for s in _after(samples, drop_at) if s.bridge and (s.bridge.allocated_height or 0) < 720), None
    )
    assert down is not None and down - drop_at <= 3, (down, figures)
    # The receiver sees it, and sees 720p again within 15 s of the recovery.
    assert any(s.page and 0 < s.page.frame_height < 720 for s in _after(samples, drop_at)), figures
    back = next((s.t for s in _after(samples, recover_at) if s.page and s.page.frame_height >= 720), None)
    assert back is not None and back - recover_at <= 15, (back, figures)
    assert card.switches_per_min < 4, figures

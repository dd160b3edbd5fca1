"""Can a dataset be obtained here, now? A quick answer for the workflow, before any job runs.

The workflow asks this once per dataset when it builds its job graph, so that a dataset that cannot
be had (no cached copy, no mirror copy, no network) is left out of the targets with a clear warning
instead of failing a prepare job an hour into the run. Nothing is downloaded or written here: a
cached raw file is verified, a mirror file only has to be present (prepare verifies it before use),
and the canonical URL only has to answer a HEAD request within a few seconds.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fedem.data.fetch import MIRROR_ENV, resolve_mirror, verify
from fedem.data.pipeline import artifact_path, stats_path
from fedem.data.registry import DatasetSpec, get_spec
from fedem.errors import ChecksumError

HEAD_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Availability:
    dataset: str
    available: bool
    source: str  # processed | cache | mirror | url | none
    detail: str  # one sentence: where the data comes from, or why it cannot be had

    def how_to_supply(self, raw_dir: str | Path) -> str:
        return how_to_supply(get_spec(self.dataset), Path(raw_dir))

    def as_dict(self, raw_dir: str | Path) -> dict:
        out = {"dataset": self.dataset, "available": self.available, "source": self.source, "detail": self.detail}
        if not self.available:
            out["how_to_supply"] = self.how_to_supply(raw_dir)
        return out


def how_to_supply(spec: DatasetSpec, raw_dir: Path) -> str:
    member = "" if spec.member is None else f" (member '{spec.member}' of {spec.url})"
    return (
        f"put the raw file '{spec.filename}'{member} at {raw_dir / spec.key / spec.filename}, "
        f"or set {MIRROR_ENV} to a folder containing {spec.key}/{spec.filename}, "
        f"or set data.allow_download: true on a machine that can reach {spec.url}"
    )


def url_answers(url: str, timeout_s: float = HEAD_TIMEOUT_S) -> tuple[bool, str]:
    """Whether `url` answers a HEAD request (2xx/3xx, or 405 from a server that refuses HEAD)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "fedem-availability-check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return True, f"{url} answered HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        if exc.code == 405:
            return True, f"{url} is reachable (HTTP 405 to HEAD)"
        return False, f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url} did not answer within {timeout_s:g} s ({reason})"


def check_dataset(
    config: dict,
    dataset: str,
    dedupe_variants: tuple[bool, ...] = (False,),
    head_timeout_s: float = HEAD_TIMEOUT_S,
) -> Availability:
    """Where `dataset` would come from if prepared now, first match wins:
    processed artifacts for every needed variant, a verified cached raw file, a mirror file, the URL.
    """
    spec = get_spec(dataset)
    data = config["data"]
    artifacts = [artifact_path(config, dataset, dedupe) for dedupe in dedupe_variants]
    if artifacts and all(a.is_file() and stats_path(a).is_file() for a in artifacts):
        return Availability(dataset, True, "processed", f"processed artifacts exist under {artifacts[0].parent}")

    tried = []
    cached = Path(data["raw_dir"]) / spec.key / spec.filename
    if cached.is_file():
        try:
            verify(cached, spec)
            return Availability(dataset, True, "cache", f"verified raw file {cached}")
        except ChecksumError:
            tried.append(f"the cached {cached} fails its checksum")
    else:
        tried.append(f"no cached {cached}")

    mirror = resolve_mirror(data["mirror"])
    if mirror is not None and (mirror / spec.key / spec.filename).is_file():
        return Availability(dataset, True, "mirror", f"mirror file {mirror / spec.key / spec.filename}")
    tried.append(
        "no offline mirror is set" if mirror is None else f"the mirror {mirror} has no {spec.key}/{spec.filename}"
    )

    if data["allow_download"]:
        ok, why = url_answers(spec.url, head_timeout_s)
        if ok:
            return Availability(dataset, True, "url", why)
        tried.append(why)
    else:
        tried.append("downloads are off (data.allow_download: false)")
    return Availability(dataset, False, "none", "; ".join(tried))

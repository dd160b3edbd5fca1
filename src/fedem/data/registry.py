"""The datasets the package knows: canonical source, checksums, raw file and parser of each.

Checksums are those recorded with the genuine copies of the offline dataset mirror (each one
cross-checked against public quotes; docs/PROTOCOL.md §1 lists them). ``sha256`` is that of the raw rating file; ``git_blob`` (what ``git hash-object FILE``
prints) is an alternative check for files whose sha256 nobody has published (ml-1m).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedem.data import parsers
from fedem.errors import DataError


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from and how its raw rating file is checked and read."""

    key: str
    url: str  # canonical download URL (an archive, or the raw file itself when member is None)
    archive_sha256: str | None  # sha256 of what `url` serves when it is an archive; None if unknown
    member: str | None  # path of the raw file inside the zip archive; None when `url` is the raw file
    filename: str  # raw file name in raw_dir/<key>/ and in the mirror <mirror>/<key>/
    sha256: str | None  # sha256 of the raw file
    parser: Callable[[Path], pd.DataFrame]
    citation: str  # one line: licence/terms and what to cite
    git_blob: str | None = None  # git blob SHA-1 of the raw file

    def __post_init__(self) -> None:
        if self.sha256 is None and self.git_blob is None:
            raise ValueError(f"dataset spec '{self.key}' needs a sha256 or a git_blob for its raw file")
        if self.member is not None and Path(self.member).name != self.filename:
            raise ValueError(f"dataset spec '{self.key}': member '{self.member}' is not named '{self.filename}'")


DATASETS: dict[str, DatasetSpec] = {
    spec.key: spec
    for spec in (
        DatasetSpec(
            key="ml-100k",
            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            archive_sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            member="ml-100k/u.data",
            filename="u.data",
            sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            git_blob="16ef21ed827cae1a3f71e89e23cffb5a8f44baae",
            parser=parsers.parse_ml100k,
            citation=(
                "GroupLens MovieLens licence (research use, no redistribution without permission); cite "
                "F. M. Harper and J. A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS 5(4), 2015."
            ),
        ),
        DatasetSpec(
            key="ml-1m",
            url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            archive_sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            member="ml-1m/ratings.dat",
            filename="ratings.dat",
            sha256=None,  # unpublished; the git blob is known from two independent repository trees
            git_blob="77a7c4b150f588c23bb9e1f068aa996c0b413695",
            parser=parsers.parse_ml1m,
            citation=(
                "GroupLens MovieLens licence (research use, no redistribution without permission); cite "
                "F. M. Harper and J. A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS 5(4), 2015."
            ),
        ),
        DatasetSpec(
            key="filmtrust",
            url="https://guoguibing.github.io/librec/datasets/filmtrust.zip",
            archive_sha256="de4a55cb4ae26f663d88e9ad1ba1fae2d0d6d7a7499e37dc5245bab470c2d13c",
            member="ratings.txt",  # the zip has no top-level folder: ratings.txt, trust.txt, readme.txt
            filename="ratings.txt",
            sha256="241167424e24d588e8871d68641e94ead98d5b3a4f0db01ef3181a74ad35e7a1",
            git_blob="364b2d78af3e093c47a1d50a862cf650e38396a4",
            parser=parsers.parse_filmtrust,
            citation=(
                "FilmTrust, distributed with LibRec for research use; cite G. Guo, J. Zhang and N. Yorke-Smith, "
                "A Novel Bayesian Similarity Measure for Recommender Systems, IJCAI 2013."
            ),
        ),
        DatasetSpec(
            key="lastfm-2k",
            url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
            archive_sha256="6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
            member="user_taggedartists.dat",  # the HetRec zip keeps its files at the top level
            filename="user_taggedartists.dat",
            sha256="d31fe938fcfeed6f0059f37a36b156f63674d073fc2553e5cc9dc1595e365bc7",
            git_blob="767d371c20243df3deeae24ede577570e5e60566",
            parser=parsers.parse_lastfm_tagged,
            citation=(
                "HetRec 2011 Last.fm dataset (Last.fm terms; non-commercial research use); cite I. Cantador, "
                "P. Brusilovsky and T. Kuflik, 2nd Workshop on Information Heterogeneity and Fusion in "
                "Recommender Systems (HetRec 2011), RecSys 2011."
            ),
        ),
        DatasetSpec(
            key="amazon-video",
            url=(
                "https://raw.githubusercontent.com/Zhangcx19/IJCAI-23-PFedRec/"
                "abc23809b9bca8f4f09fab5311ae4a63ed6159d2/data/amazon/ratings.dat"
            ),
            archive_sha256=None,  # the URL is the raw file itself
            member=None,
            filename="ratings.dat",
            sha256="a1292e4a4dba6c37be6ae5dc83d4404af96bf3eace4c8954e2f4e8360a3cdd76",
            git_blob="13975c04b5689f41360da3ed03f791d5282b8944",
            parser=parsers.parse_amazon,
            citation=(
                "Amazon Instant Video ratings (McAuley lab, research use), processed subset from PFedRec; cite "
                "R. He and J. McAuley, Ups and Downs, WWW 2016, and C. Zhang et al., Dual Personalization "
                "on Federated Recommendation, IJCAI 2023."
            ),
        ),
    )
}


def get_spec(key: str) -> DatasetSpec:
    """The spec of dataset `key`; DataError listing the valid keys if there is none."""
    try:
        return DATASETS[key]
    except KeyError:
        raise DataError(f"unknown dataset '{key}'; valid datasets: {', '.join(sorted(DATASETS))}") from None

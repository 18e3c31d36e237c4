"""The four plots of timebank.analysis for the sample ledger (examples/sample_ledger.py),
written as PNG files of 1000 x 600 pixels: the ones in docs/images come from this script.

- balance_history.png: the running balance of the member account with the most kinds of
  movement (deposits, redemptions, gifts, expiry...);
- monthly_deposits_vs_redemptions.png: per site and month, minutes issued and redeemed;
- clearing_heatmap.png: where the sample's redeemed minutes were earned, by county;
- age_pyramid.png: volunteers and recipients by age band and sex on the last day.

Run: python examples/plots.py [sqlite:///empty.db] [--out docs/images]
(the database must be empty: the sample is built in it; default: a temporary file).
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import timedelta
from pathlib import Path

from sample_ledger import PROGRAMME, START, ZONE, build

import timebank
from timebank import analysis
from timebank.analysis import plots

DPI = 100


def busiest_member(bank: timebank.TimeBank) -> tuple[int, str]:
    """The member (id, account code) with the most kinds of entries, then the most
    postings."""
    moves = analysis.postings(bank, programme=PROGRAMME, account_types=["member"])
    per_member = moves.groupby(["member_id", "account_code"])["entry_code"].agg(
        ["nunique", "size"]
    )
    ranked = per_member.sort_values(["nunique", "size"], ascending=False, kind="stable")
    member_id, account = ranked.index[0]
    return int(member_id), str(account)


def write(bank: timebank.TimeBank, folder: Path) -> list[Path]:
    """Draw the four plots of ``bank`` (the sample) and save them in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    # The ledger's clock stands at the sample's last evening: the period ends the day after.
    end = bank.ledger.clock().astimezone(ZONE).date() + timedelta(days=1)
    member_id, account = busiest_member(bank)
    figures = {
        "balance_history": plots.balance_history_plot(
            bank, account, title=f"{PROGRAMME}: the balance of member {member_id}"
        ),
        "monthly_deposits_vs_redemptions": plots.monthly_deposits_vs_redemptions(
            bank, PROGRAMME
        ),
        "clearing_heatmap": plots.clearing_heatmap(bank, PROGRAMME, START, end, level="county"),
        "age_pyramid": plots.age_pyramid(bank, PROGRAMME, on=end - timedelta(days=1)),
    }
    written = []
    for name, figure in figures.items():
        path = folder / f"{name}.png"
        # No "Software" stamp: the same ledger gives the same bytes on every run.
        figure.savefig(path, dpi=DPI, metadata={"Software": None})
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="The sample ledger's plots as PNG files.")
    parser.add_argument("url", nargs="?", help="an empty database (default: a temporary file)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="output folder")
    arguments = parser.parse_args()
    url = arguments.url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'sample_ledger.db'}"
    bank = build(url)
    try:
        for path in write(bank, arguments.out):
            print(f"wrote {path}")
    finally:
        bank.dispose()


if __name__ == "__main__":
    main()

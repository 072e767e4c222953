"""Tables of the value analyses: channel costs per period (imported or set by hand).

Attribution reads them to put a cost beside each channel's credit (ROI, CPA). A row is the
spend of one channel over [period_start, period_end) (naive UTC); the spend of a range is the
sum of each row's spend times the share of its period inside the range.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS channel_costs (
        channel VARCHAR NOT NULL,
        period_start TIMESTAMP NOT NULL,
        period_end TIMESTAMP NOT NULL,
        spend DOUBLE NOT NULL,
        currency VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        recorded_at TIMESTAMP NOT NULL
    )
    """,
)

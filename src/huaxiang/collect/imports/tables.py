"""Tables of bulk imports: orders, DMP labels, the import registry and the row fingerprints.

``orders`` is read by the profile 360 view (orders and total spend). ``dmp_labels`` keeps
third-party labels keyed by the identifier they came with; they reach a person through
``identity_map`` like every other identifier-keyed value. ``imports`` records each import with its
quality report; ``import_rows`` holds a fingerprint of every customer row loaded, so re-importing
the same contacts changes nothing.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    # One row per order. id_type/id_value: the row's strongest identifier, normalised.
    """
    CREATE TABLE IF NOT EXISTS orders (
        order_id VARCHAR PRIMARY KEY,
        id_type VARCHAR,
        id_value VARCHAR,
        amount DECIMAL(18,2) NOT NULL,
        currency VARCHAR NOT NULL,
        items JSON,
        channel VARCHAR,
        store VARCHAR,
        order_time TIMESTAMP NOT NULL,
        status VARCHAR NOT NULL,
        refund_amount DECIMAL(18,2) NOT NULL,
        source VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS dmp_labels (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        label VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        trust DOUBLE,
        file VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS imports (
        import_id VARCHAR PRIMARY KEY,
        file_name VARCHAR NOT NULL,
        sha256 VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        dry_run BOOLEAN NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP NOT NULL,
        rows_read BIGINT NOT NULL,
        rows_loaded BIGINT NOT NULL,
        rows_updated BIGINT NOT NULL,
        rows_rejected BIGINT NOT NULL,
        rows_duplicate BIGINT NOT NULL,
        report JSON NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS import_rows (
        kind VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        import_id VARCHAR NOT NULL
    )
    """,
)

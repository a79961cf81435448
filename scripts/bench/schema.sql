-- Tables of the PostgreSQL peer benchmark (scripts/bench/postgres.sh). Money is numeric, exact.
CREATE TABLE balances (
    account_id integer PRIMARY KEY,
    balance numeric(20, 4) NOT NULL CHECK (balance >= 0)
);
CREATE TABLE usage_events (
    event_id text PRIMARY KEY,
    account_id integer NOT NULL,
    quantity integer NOT NULL,
    amount numeric(20, 4) NOT NULL,
    settled_at timestamptz NOT NULL DEFAULT now()
);
-- Every account gets what Tally's two grants hold together (1,000,000 + 1,000,000 credits).
INSERT INTO balances SELECT account_id, 2000000 FROM generate_series(1, :accounts) AS account_id;
VACUUM ANALYZE;

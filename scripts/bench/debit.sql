-- The standard debit as ONE statement per event, correct on retry (pgbench script; variables:
-- accounts from -D, client_id from pgbench).
-- 1. Insert the usage row keyed by its event id if it is new (a retry inserts nothing).
-- 2. Debit the balance only when that insert happened and the balance stays >= 0.
-- 3. When the row was inserted but the debit was refused (insufficient funds), fail the whole
--    statement (0 / 0), so the event is not remembered as settled and a retry after a top-up can
--    still settle it: the same contract as Tally's rejection. A retry of a settled event returns
--    1 and changes nothing.
-- The price is per unit, exact numeric: 2 credits per 1,000 tokens.
\set aid random(1, :accounts)
\set qty random(1, 1000)
\set eid random(1, 4611686018427387903)
WITH inserted AS (
    INSERT INTO usage_events (event_id, account_id, quantity, amount)
    VALUES (:client_id || '-' || :eid, :aid, :qty, :qty * 0.002)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING account_id, amount
), debited AS (
    UPDATE balances SET balance = balances.balance - inserted.amount
    FROM inserted
    WHERE balances.account_id = inserted.account_id AND balances.balance >= inserted.amount
    RETURNING balances.account_id
)
SELECT CASE WHEN (SELECT count(*) FROM inserted) = (SELECT count(*) FROM debited) THEN 1
            ELSE 1 / ((SELECT count(*) FROM debited) - (SELECT count(*) FROM debited))::int
       END AS settled;

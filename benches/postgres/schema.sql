-- The referral work of benches/referrals.rs, in PostgreSQL: players with parent links
-- and counters (referees within 8 levels, activated referees within 8 levels), one row
-- per reward, one row per partner event-log entry, and a leaderboard index, as
-- Playtree's trees, grants, log and leaderboard keep them. Seeded like the Playtree run: 100 influencers
-- refer about half of the players, the rest hang in chains below random earlier players,
-- at most 8 levels deep.
DROP TABLE IF EXISTS partner_log;
DROP TABLE IF EXISTS rewards;
DROP TABLE IF EXISTS players;
CREATE TABLE players (
    id bigserial PRIMARY KEY,
    parent bigint REFERENCES players (id),
    root bigint NOT NULL,
    depth int NOT NULL,
    referees int NOT NULL DEFAULT 0,
    referees_within_8 int NOT NULL DEFAULT 0,
    last_referee_at timestamptz,
    activated boolean NOT NULL DEFAULT false,
    activated_referees int NOT NULL DEFAULT 0,
    earned bigint NOT NULL DEFAULT 0
);
CREATE TABLE rewards (
    id bigserial PRIMARY KEY,
    beneficiary bigint NOT NULL REFERENCES players (id),
    friend bigint NOT NULL REFERENCES players (id),
    level int NOT NULL,
    trigger smallint NOT NULL,
    amount int NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rewards_by_beneficiary ON rewards (beneficiary);
CREATE INDEX leaderboard ON players (referees DESC, last_referee_at);
-- The partner event log: one entry per claim and per reward.
CREATE TABLE partner_log (
    "offset" bigserial PRIMARY KEY,
    entry jsonb NOT NULL
);

DO $$
DECLARE
    n bigint;
    p bigint;
    players_total bigint := :players;
BEGIN
    PERFORM setseed(0.2026);
    INSERT INTO players (id, parent, root, depth) SELECT i, NULL, i, 0 FROM generate_series(1, 100) i;
    FOR n IN 101 .. players_total LOOP
        IF random() < 0.5 THEN
            p := 1 + floor(random() * 100)::bigint;
        ELSE
            p := 1 + floor(random() * (n - 1))::bigint;
            -- Chains stop at depth 8: past it, hang below the chain's root instead.
            IF (SELECT depth FROM players WHERE id = p) >= 8 THEN
                p := (SELECT root FROM players WHERE id = p);
            END IF;
        END IF;
        INSERT INTO players (id, parent, root, depth)
            SELECT n, p, root, depth + 1 FROM players WHERE id = p;
        UPDATE players SET referees = referees + 1 WHERE id = p;
    END LOOP;
    PERFORM setval('players_id_seq', players_total);
END $$;
VACUUM ANALYZE;

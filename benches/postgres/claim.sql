-- One claim with its rewards, in one durable transaction: a new player joins below an
-- existing one (an influencer half of the time); the counters of up to 8 ancestors and
-- the referrer's leaderboard place move; the referrer earns the signup reward (100)
-- and the referee the welcome bonus (50); then the referee's first game pays the
-- activation rewards up to three levels (100, 30, 10) and counts as an activated
-- referee for up to 8 ancestors. Every claim and reward is a partner log entry.
\set influencer random(1, 2)
\set referrer CASE WHEN :influencer = 1 THEN random(1, 100) ELSE random(101, :players) END
BEGIN;
INSERT INTO players (parent, root, depth)
    SELECT id, root, depth + 1 FROM players WHERE id = :referrer
    RETURNING id AS referee \gset
UPDATE players SET referees = referees + 1, earned = earned + 100, last_referee_at = now()
    WHERE id = :referrer;
WITH RECURSIVE up (id, level) AS (
    SELECT parent, 1 FROM players WHERE id = :referee
    UNION ALL
    SELECT p.parent, up.level + 1 FROM players p JOIN up ON p.id = up.id
    WHERE up.level < 8 AND p.parent IS NOT NULL
)
UPDATE players p SET referees_within_8 = p.referees_within_8 + 1 FROM up WHERE p.id = up.id;
UPDATE players SET earned = earned + 50 WHERE id = :referee;
INSERT INTO rewards (beneficiary, friend, level, trigger, amount)
    VALUES (:referrer, :referee, 1, 1, 100), (:referee, :referee, 0, 2, 50);
INSERT INTO partner_log (entry) VALUES
    (jsonb_build_object('claimed', :referee, 'referrer', :referrer)),
    (jsonb_build_object('reward', :referrer, 'friend', :referee, 'amount', 100)),
    (jsonb_build_object('reward', :referee, 'friend', :referee, 'amount', 50));
WITH RECURSIVE up (id, level) AS (
    SELECT parent, 1 FROM players WHERE id = :referee
    UNION ALL
    SELECT p.parent, up.level + 1 FROM players p JOIN up ON p.id = up.id
    WHERE up.level < 8 AND p.parent IS NOT NULL
), counted AS (
    UPDATE players p SET activated_referees = p.activated_referees + 1
    FROM up WHERE p.id = up.id
    RETURNING p.id
), paid AS (
    INSERT INTO rewards (beneficiary, friend, level, trigger, amount)
    SELECT id, :referee, level, 3, (ARRAY[100, 30, 10])[level] FROM up WHERE level <= 3
    RETURNING beneficiary, amount
), logged AS (
    INSERT INTO partner_log (entry)
    SELECT jsonb_build_object('reward', beneficiary, 'friend', :referee, 'amount', amount)
    FROM paid
)
UPDATE players p SET earned = p.earned + paid.amount
    FROM paid WHERE p.id = paid.beneficiary;
UPDATE players SET activated = true WHERE id = :referee;
COMMIT;

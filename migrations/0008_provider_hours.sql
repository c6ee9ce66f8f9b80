-- A provider's closing time (P-10): Astana's home-call regulation accepts portal requests until
-- two hours before the provider closes, and only the provider registry knows when that is. The
-- legal-entity import may carry it (`closes_at`, local time HH:MM); a provider without one uses
-- the default in the regulation data (`intake_cutoff.provider_closes`).
ALTER TABLE registry_legal_entities ADD COLUMN closes_at time;

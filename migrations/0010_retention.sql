-- Retention (P-48). A result document the applicant did not collect is kept for the period the
-- regulation data sets for its service; after it, the personal data of the request are purged
-- and the audit skeleton stays: number, service, region, channel, the step history with its
-- times (its hash chain is untouched), the outcome's status, step, code and kind.
--
-- Purged: the signed request body (identifiers, names, form), the facts found in the
-- registries, the applicant's identifier and its masked form, the Outcome's document and the
-- copy of it in the stored Outcome body, the staff's free-text reasons of decisions. Payments
-- keep only a masked payer already.
--
-- Workers may not rewrite requests' bodies or outcomes; this one function may, for one finished
-- request at a time, and only once its final outcome is older than the given period. It runs
-- with its owner's rights (SECURITY DEFINER) and a fixed search_path.
ALTER TABLE requests ADD COLUMN purged_at timestamptz;

CREATE FUNCTION purge_personal_data(p_request uuid, p_keep interval) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    finished timestamptz;
BEGIN
    SELECT o.at INTO finished
      FROM outcomes o JOIN requests r ON r.request_id = o.request_id
     WHERE o.request_id = p_request AND r.purged_at IS NULL
       FOR UPDATE OF r;
    IF finished IS NULL OR finished > now() - p_keep OR p_keep < interval '0' THEN
        RETURN false;
    END IF;
    UPDATE requests
       SET body = jsonb_build_object('request_id', request_id, 'service', service, 'region', region,
                                     'channel', channel, 'purged', true),
           facts = '{}'::jsonb,
           applicant_id = NULL,
           applicant_masked = '',
           purged_at = now(),
           updated_at = now()
     WHERE request_id = p_request;
    UPDATE outcomes
       SET document = NULL,
           body = jsonb_set(body, '{document}', 'null'::jsonb)
     WHERE request_id = p_request;
    UPDATE decisions SET reason = NULL WHERE request_id = p_request AND reason IS NOT NULL;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION purge_personal_data(uuid, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION purge_personal_data(uuid, interval) TO qyzmet_worker;
CREATE INDEX requests_unpurged_finished ON requests (finished_at) WHERE purged_at IS NULL AND finished_at IS NOT NULL;

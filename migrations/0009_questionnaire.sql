-- The quality and accessibility questionnaire (P-51): after its final outcome an applicant may
-- answer two questions with three answers each. Every answer set that arrives is kept, the
-- accepted one and the ignored ones alike (with why it was ignored), so `qyzmet report
-- questionnaire` counts both; at most one set per request is accepted.
CREATE TABLE questionnaire_answers (
    answer_id   text PRIMARY KEY,
    request_id  uuid NOT NULL,
    service     text NOT NULL,
    region      text NOT NULL,
    channel     text NOT NULL,
    quality     smallint NOT NULL CHECK (quality BETWEEN 1 AND 3),
    information smallint NOT NULL CHECK (information BETWEEN 1 AND 3),
    answered_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    submitter   text,
    accepted    boolean NOT NULL,
    rejection   text,
    CHECK (accepted = (rejection IS NULL))
);
CREATE UNIQUE INDEX questionnaire_one_per_request ON questionnaire_answers (request_id) WHERE accepted;
CREATE INDEX questionnaire_received ON questionnaire_answers USING brin (received_at);

GRANT SELECT, INSERT ON questionnaire_answers TO qyzmet_worker;
GRANT SELECT ON questionnaire_answers TO qyzmet_reader, qyzmet_console;

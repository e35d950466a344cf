-- The last preflight census that ran to the end (MigrationAdmin.RunPreflight), one row:
-- its report as trickle.migration.v1.PreflightReport, protobuf-encoded (legacy ids and
-- counts; emails only when the operator asked for them). GetStatus shows it.
CREATE TABLE preflight_reports (
    id     INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    report BYTEA NOT NULL
);

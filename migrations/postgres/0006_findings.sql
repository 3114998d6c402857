-- The alt-text linter's findings (a JSON array of {output, code, severity, message, excerpt})
-- and the worst severity among them as a number for filtering and ordering: 0 none, 1 info,
-- 2 warning, 3 error. NULL in both for rows written before the linter (not checked yet; an
-- edit checks them).
ALTER TABLE descriptions ADD COLUMN findings TEXT;
ALTER TABLE descriptions ADD COLUMN lint_level INTEGER;

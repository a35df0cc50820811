-- What each host booted: see migrations/sqlite/0013_booted_closure.sql.
ALTER TABLE host_presence ADD COLUMN booted_closure text;

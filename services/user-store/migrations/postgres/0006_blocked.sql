-- A blocked user's logins are refused after the password is checked, and their tokens stop
-- validating. Carried from the legacy store at import, set and lifted by BlockUser /
-- UnblockUser.
ALTER TABLE users ADD COLUMN blocked BOOLEAN NOT NULL DEFAULT FALSE;

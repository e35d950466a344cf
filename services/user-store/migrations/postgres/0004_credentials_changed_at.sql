-- When the password last changed (ChangePassword, ResetPassword): access tokens issued before
-- it are refused by ValidateToken. NULL: never changed since the account was created.
ALTER TABLE users ADD COLUMN credentials_changed_at TIMESTAMPTZ;

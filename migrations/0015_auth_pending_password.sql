-- A confirmation mail remembers the password its sign-up chose. Whoever proves the address
-- first decides the account: spending that mail keeps (or sets) that password, while any
-- other first proof (magic link, recovery, a resent confirmation, OAuth) clears the
-- password. So a stranger who signed up with someone else's address keeps nothing.
ALTER TABLE basalt.email_tokens ADD COLUMN password_hash text;

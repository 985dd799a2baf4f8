-- Sign-in codes are bounded per token and per tenant (CreateUISignInCode
-- counts them on every new code), and go with their tenant.
CREATE INDEX ui_signin_codes_token ON ui_signin_codes (token_hash, expires_at);
CREATE INDEX ui_signin_codes_tenant ON ui_signin_codes (tenant, expires_at);

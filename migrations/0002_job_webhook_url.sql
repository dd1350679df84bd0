-- labcron ledger, schema version 2: a job's webhook (ext), which receives each finished run as a
-- signed POST. NULL: no webhook.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;

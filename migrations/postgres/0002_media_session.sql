-- The media backend's session of a visit (the Amazon Chime MeetingId; NULL for the SFU),
-- recorded when a participant joins so that ending the visit can close the session.
ALTER TABLE visits ADD COLUMN media_session_id TEXT;

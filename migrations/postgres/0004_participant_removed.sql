-- When the clinician removed a participant from its visit for good (Unix ms); NULL while it
-- may take a seat. Kept with the participant, not in a node's memory, so a removal holds
-- across an empty room, a restart and another node. Row-level security of participants
-- covers it.
ALTER TABLE participants ADD COLUMN removed_at BIGINT;

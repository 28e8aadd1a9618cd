use super::ids::ParticipantId;

/// The participants of one room. Rooms are small (a visit), so a vector is the right map.
#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) members: Vec<ParticipantId>,
}

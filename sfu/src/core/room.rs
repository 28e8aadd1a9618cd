use super::ids::ParticipantId;
use super::speaker::Speakers;

/// The participants of one room. Rooms are small (a visit), so a vector is the right map.
#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) members: Vec<ParticipantId>,
    /// Who speaks, from the members' audio levels.
    pub(crate) speakers: Speakers,
}

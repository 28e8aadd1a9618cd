//! WebSocket signaling between browsers and the SFU. Built in its own issue (#3); empty until then.

//! Load generator for Bedside. Built in its own issue (#5); empty until then.

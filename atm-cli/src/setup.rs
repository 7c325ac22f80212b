//! `atmctl setup <agent>`: installs atm-hook into an agent's settings, safely.
//! (Being written.)

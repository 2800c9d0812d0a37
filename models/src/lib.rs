//! Cloister sealed models.

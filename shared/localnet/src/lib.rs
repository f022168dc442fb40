//! Local netns cluster. Being implemented.

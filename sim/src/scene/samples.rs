//! The shipped sample scenes and their textures, compiled into the binary so `Scene::sample`
//! and `sextant demo` work from any folder.

/// Names accepted by [`crate::Scene::sample`].
pub const SAMPLE_NAMES: [&str; 3] = ["room", "facade", "plaza"];

pub(crate) fn scene_text(name: &str) -> Option<&'static str> {
    match name {
        "room" => Some(include_str!("../../../assets/scenes/room.toml")),
        "facade" => Some(include_str!("../../../assets/scenes/facade.toml")),
        "plaza" => Some(include_str!("../../../assets/scenes/plaza.toml")),
        _ => None,
    }
}

/// Embedded textures, keyed by their path as the sample scenes write it.
const TEXTURES: [(&str, &[u8]); 7] = [
    (
        "../photos/brick.png",
        include_bytes!("../../../assets/photos/brick.png"),
    ),
    (
        "../photos/grass.png",
        include_bytes!("../../../assets/photos/grass.png"),
    ),
    (
        "../photos/gravel.png",
        include_bytes!("../../../assets/photos/gravel.png"),
    ),
    (
        "../photos/coffee.png",
        include_bytes!("../../../assets/photos/coffee.png"),
    ),
    (
        "../photos/chelsea.png",
        include_bytes!("../../../assets/photos/chelsea.png"),
    ),
    (
        "../photos/astronaut.png",
        include_bytes!("../../../assets/photos/astronaut.png"),
    ),
    (
        "../photos/camera.png",
        include_bytes!("../../../assets/photos/camera.png"),
    ),
];

pub(crate) fn texture_bytes(path: &str) -> Option<&'static [u8]> {
    TEXTURES.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

//! Reads from `/proc` that the init and its drills need.

/// Number of zombie processes (state `Z` in `/proc/PID/stat`).
pub fn count_zombies() -> u32 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The state follows the last ')' (the command name may contain parentheses).
        if let Some((_, rest)) = stat.rsplit_once(')') {
            if rest.trim_start().starts_with('Z') {
                n += 1;
            }
        }
    }
    n
}

//! `tracer top` driven in a real terminal (tmux): it shows the refusing destination, and q quits.
use std::{process::Command, time::Duration};

use tracer_tests::{Netns, require_kernel, scenario::client_run, tracer_bin, wait_until};

/// A detached tmux session, killed on drop.
struct Tmux(String);

impl Tmux {
    fn start(name: &str, command: &str) -> Self {
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "160",
                "-y",
                "40",
                command,
            ])
            .status()
            .expect("tmux (cargo xtask setup installs it)");
        assert!(ok.success(), "tmux new-session failed");
        Tmux(name.to_string())
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(
            Command::new("tmux")
                .args(["send-keys", "-t", &self.0, keys])
                .status()
                .unwrap()
                .success()
        );
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

#[test]
fn top_shows_the_refusing_destination_and_quits_on_q() {
    require_kernel();
    let ns = Netns::new("top");
    let command = format!(
        "{} top --netns {}",
        tracer_bin().unwrap().display(),
        ns.inode
    );
    let tmux = Tmux::start(&format!("tt-top-{}", std::process::id()), &command);
    wait_until("the table header", Duration::from_secs(20), || {
        tmux.screen().contains("DESTINATION").then_some(())
    });
    for _ in 0..3 {
        client_run(
            &ns,
            &["connect", "--addr", "127.0.0.1:47"],
            Duration::from_secs(5),
        );
    }
    let screen = wait_until(
        "the refusing destination's row",
        Duration::from_secs(10),
        || {
            let s = tmux.screen();
            s.lines()
                .any(|l| {
                    l.contains("127.0.0.1:47")
                        && l.contains("refusing")
                        && l.split_whitespace().any(|c| c == "3")
                })
                .then_some(s)
        },
    );
    let row = screen.lines().find(|l| l.contains("127.0.0.1:47")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.contains(&"3"), "3 refusals in the row: {row}");
    tmux.keys("q");
    wait_until("tracer top to quit on q", Duration::from_secs(5), || {
        (!tmux.alive()).then_some(())
    });
}

//! `controller.quorum.voters`, Kafka's syntax: `id@host:port` entries separated by commas,
//! e.g. `1@127.0.0.1:9093,2@127.0.0.1:9094,3@127.0.0.1:9095`.

use crate::wire::Voter;

/// Parses the voters list; ids are positive and distinct, hosts non-empty, ports 1..=65535.
/// IPv6 hosts go in brackets: `1@[::1]:9093`.
pub fn parse_voters(s: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("{entry:?}: expected id@host:port"))?;
        let node_id: i32 = id
            .trim()
            .parse()
            .map_err(|_| format!("{entry:?}: {id:?} is not a node id"))?;
        if node_id < 0 {
            return Err(format!("{entry:?}: node ids are not negative"));
        }
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry:?}: expected host:port after @"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{entry:?}: empty host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{entry:?}: {port:?} is not a port"))?;
        if voters.iter().any(|v| v.node_id == node_id) {
            return Err(format!("node id {node_id} is listed twice"));
        }
        voters.push(Voter {
            node_id,
            host: host.to_owned(),
            port,
        });
    }
    if voters.is_empty() {
        return Err("no voters listed".into());
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_syntax_parses_and_mistakes_are_named() {
        let v = parse_voters("1@127.0.0.1:9093, 2@[::1]:9094,3@node-3:9095").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            (v[1].node_id, v[1].host.as_str(), v[1].port),
            (2, "::1", 9094)
        );
        for bad in [
            "",
            "1",
            "x@h:1",
            "1@h",
            "1@:9093",
            "1@h:0",
            "1@h:70000",
            "1@h:1,1@g:2",
            "-1@h:1",
        ] {
            assert!(parse_voters(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! A cluster of `sluice` processes on this machine: combined nodes (broker and controller)
//! 1..=N on free loopback ports, each with its own data directory and log.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Client;

pub struct Node {
    pub id: i32,
    /// `process.roles`.
    pub roles: String,
    pub client: SocketAddr,
    pub controller: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    /// Starts `n` combined nodes with `props` added to each one's properties, and waits
    /// until all are ready and see every broker unfenced.
    pub fn start(n: usize, props: &[&str]) -> Cluster {
        Cluster::start_roles(&vec!["broker,controller"; n], props)
    }

    /// Starts one node per entry of `roles` (its `process.roles`; the nodes with the
    /// controller role are the voters), and waits as `start` does.
    pub fn start_roles(roles: &[&str], props: &[&str]) -> Cluster {
        let n = roles.len();
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(3 * n);
        let voters: Vec<String> = (0..n)
            .filter(|i| roles[*i].contains("controller"))
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[n + i]))
            .collect();
        let voters = voters.join(",");
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as i32 + 1;
            let home = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&home).unwrap();
            let (client, controller, admin) = (ports[i], ports[n + i], ports[2 * n + i]);
            let listeners = match roles[i] {
                "broker" => format!("PLAINTEXT://127.0.0.1:{client}"),
                "controller" => format!("CONTROLLER://127.0.0.1:{controller}"),
                _ => format!("PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}"),
            };
            let mut text = format!(
                "node.id={id}\nprocess.roles={}\n\
                 controller.quorum.voters={voters}\ncontroller.listener.names=CONTROLLER\n\
                 listeners={listeners}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{client}\n\
                 log.dirs={}\nsluice.admin.listen=127.0.0.1:{admin}\n",
                roles[i],
                home.join("data").display()
            );
            for p in props {
                text.push_str(p);
                text.push('\n');
            }
            let config = home.join("server.properties");
            std::fs::write(&config, text).unwrap();
            nodes.push(Node {
                id,
                roles: roles[i].to_string(),
                client: format!("127.0.0.1:{client}").parse().unwrap(),
                controller: format!("127.0.0.1:{controller}").parse().unwrap(),
                admin: format!("127.0.0.1:{admin}").parse().unwrap(),
                config,
                log_path: home.join("sluice.log"),
                child: None,
            });
        }
        let mut c = Cluster { nodes, _dir: dir };
        let before: Vec<usize> = (1..=n as i32).map(|i| c.ready_lines(i)).collect();
        for i in 1..=n as i32 {
            c.launch(i);
        }
        for i in 1..=n as i32 {
            c.wait_ready(i, before[i as usize - 1]);
        }
        // Ready means serving, not yet registered everywhere: a topic created before the
        // controller has seen every broker unfenced would be placed on fewer of them.
        let brokers = roles.iter().filter(|r| r.contains("broker")).count();
        for i in 1..=n as i32 {
            c.wait_unfenced(i, brokers, Duration::from_secs(90));
        }
        c
    }

    /// Waits until node `id` sees `n` brokers, all unfenced.
    pub fn wait_unfenced(&self, id: i32, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let d = self.describe(id);
            let unfenced = d["brokers"]
                .as_array()
                .map_or(0, |b| b.iter().filter(|b| b["state"] == "unfenced").count());
            if unfenced == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} sees {unfenced} of {n} brokers unfenced: {d}\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn node(&self, id: i32) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    pub fn log(&self, id: i32) -> String {
        std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default()
    }

    fn ready_lines(&self, id: i32) -> usize {
        self.log(id).matches("sluice ready").count()
    }

    /// Spawns node `id` without waiting.
    pub fn launch(&mut self, id: i32) {
        let n = self.node_mut(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("start")
            .arg("--config")
            .arg(&n.config)
            .args(["--smp", "1"])
            .env_remove("SLUICE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        n.child = Some(child);
    }

    fn wait_ready(&mut self, id: i32, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let serving = !self.node(id).roles.contains("broker")
                || TcpStream::connect(self.node(id).client).is_ok();
            if self.ready_lines(id) > before && serving {
                return;
            }
            let n = self.node_mut(id);
            if let Some(status) = n.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "node {id} exited at start-up with {status}: {}",
                    self.log(id)
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not start: {}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts node `id` again and waits until it is ready.
    pub fn restart(&mut self, id: i32) {
        let before = self.ready_lines(id);
        self.launch(id);
        self.wait_ready(id, before);
    }

    pub fn kill9(&mut self, id: i32) {
        if let Some(mut c) = self.node_mut(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, id: i32, sig: i32) {
        let pid = self.node(id).child.as_ref().expect("running").id();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }

    pub fn is_running(&mut self, id: i32) -> bool {
        matches!(
            self.node_mut(id).child.as_mut().map(|c| c.try_wait()),
            Some(Ok(None))
        )
    }

    pub fn client(&self, id: i32) -> Client {
        Client::connect(self.node(id).client)
    }

    /// GET `path` from node `id`'s admin server: (status, body).
    pub fn admin_get(&self, id: i32, path: &str) -> (u16, String) {
        super::http_get(self.node(id).admin, path).unwrap_or((0, String::new()))
    }

    /// The cluster as node `id` describes it (`/v1/brokers`' "cluster").
    pub fn describe(&self, id: i32) -> serde_json::Value {
        let (_, body) = self.admin_get(id, "/v1/brokers");
        serde_json::from_str::<serde_json::Value>(&body)
            .map(|v| v["cluster"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The active controller as the running node `id` knows it, waiting up to `within`.
    pub fn controller(&self, id: i32, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.describe(id)["controller"].as_i64() {
                return Some(c as i32);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                // SAFETY: kill(2) on our own child: a stopped node gets going to die.
                unsafe {
                    libc::kill(c.id() as libc::pid_t, libc::SIGCONT);
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

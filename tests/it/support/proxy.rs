//! A TCP proxy a test can cut: `down()` closes every connection through it and refuses new ones, `up()`
//! lets them through again. It stands between Herald and a real RabbitMQ to simulate an outage of the
//! test's own connection without touching the shared broker.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{net::TcpListener, sync::watch};

pub struct Proxy {
    pub address: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("address");
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let accept = tokio::spawn({
            let (open, cuts) = (open.clone(), cuts.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Self { address, open, cuts, accept }
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|generation| *generation += 1);
    }

    pub fn up(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

/// A proxy in front of the test broker (`HERALD_TEST_AMQP_URL`), and the broker's URL through it.
pub async fn broker_proxy() -> (Proxy, url::Url) {
    let amqp = url::Url::parse(&std::env::var("HERALD_TEST_AMQP_URL").expect("amqp")).expect("url");
    let broker = format!("{}:{}", amqp.host_str().expect("host"), amqp.port().unwrap_or(5672));
    let proxy =
        Proxy::start(tokio::net::lookup_host(broker).await.expect("resolve").next().expect("address")).await;
    let mut through_proxy = amqp.clone();
    through_proxy.set_port(Some(proxy.address.port())).expect("port");
    (proxy, through_proxy)
}

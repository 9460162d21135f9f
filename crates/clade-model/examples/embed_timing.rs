use clade_model::local_embeddings::LocalEmbeddings;
#[tokio::main]
async fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let m = LocalEmbeddings::load(&dir, "m").unwrap();
    let texts: Vec<String> = (0..256).map(|i| format!("Ada moved the blue bicycle to the garage near the harbour on day {i} zqx{i}")).collect();
    let sizes: Vec<usize> = std::env::args().skip(2).map(|a| a.parse().unwrap()).collect();
    for &b in &sizes {
        m.embed(&texts[..b]).await.unwrap();
        let t = std::time::Instant::now();
        let reps = (256 / b).max(4);
        for _ in 0..reps { m.embed(&texts[..b]).await.unwrap(); }
        let e = t.elapsed().as_secs_f64() / reps as f64;
        println!("batch {b:3}: {:.2} ms a pass, {:.0} sentences/s", e * 1e3, b as f64 / e);
    }
}

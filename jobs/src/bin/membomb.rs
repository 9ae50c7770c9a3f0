//! `membomb`: allocates and touches 1 MiB blocks until the executor's memory cap stops it.
fn main() {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[0] = blocks.len() as u8;
        blocks.push(std::hint::black_box(block));
    }
}

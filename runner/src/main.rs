mod experiment;

fn main() {}

pub mod fake_syzbot;

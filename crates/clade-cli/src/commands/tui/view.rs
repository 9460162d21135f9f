//! Draws the terminal UI: agents on the left, the selected agent (or every agent) on the
//! right, the outcome of the last command and the command line at the bottom.

use clade_config::TuiTheme;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, Paragraph, Wrap};

use super::app::{App, View};

/// Colours of a theme.
#[derive(Clone, Copy)]
pub(super) struct Palette {
    accent: Style,
    muted: Style,
    bad: Style,
    selected: Style,
}

impl Palette {
    pub(super) fn of(theme: TuiTheme) -> Self {
        let colour = |c: Color| Style::new().fg(c);
        match theme {
            TuiTheme::Dark => Self {
                accent: colour(Color::Cyan),
                muted: colour(Color::DarkGray),
                bad: colour(Color::LightRed),
                selected: Style::new().fg(Color::Black).bg(Color::Cyan),
            },
            TuiTheme::Light => Self {
                accent: colour(Color::Blue),
                muted: colour(Color::Gray),
                bad: colour(Color::Red),
                selected: Style::new().fg(Color::White).bg(Color::Blue),
            },
            TuiTheme::Mono => Self {
                accent: Style::new().add_modifier(Modifier::BOLD),
                muted: Style::new(),
                bad: Style::new().add_modifier(Modifier::BOLD),
                selected: Style::new().add_modifier(Modifier::REVERSED),
            },
        }
    }
}

/// Bar cells for a token count, scaled to the busiest agent's.
const BAR: usize = 8;

pub(super) fn draw(frame: &mut Frame, app: &App, palette: Palette) {
    let [main, notice, input] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(2), Constraint::Length(1)])
            .areas(frame.area());
    let [left, right] =
        Layout::horizontal([Constraint::Length(36), Constraint::Min(20)]).areas(main);
    agents(frame, app, palette, left);
    match app.view {
        View::Agent => agent(frame, app, palette, right),
        View::All => everyone(frame, app, palette, right),
    }
    let (text, error) = &app.notice;
    let style = if *error { palette.bad } else { palette.muted };
    frame.render_widget(
        Paragraph::new(text.as_str()).style(style).wrap(Wrap { trim: true }),
        notice,
    );
    let line = Line::from(vec![Span::styled("> ", palette.accent), Span::raw(app.input.as_str())]);
    frame.render_widget(Paragraph::new(line), input);
    let cursor = input.x + 2 + app.input.chars().count() as u16;
    frame.set_cursor_position((cursor.min(input.right().saturating_sub(1)), input.y));
}

fn agents(frame: &mut Frame, app: &App, palette: Palette, area: Rect) {
    let most = app.agents.iter().map(|a| a.tokens).max().unwrap_or(0).max(1);
    let items: Vec<ListItem> = app
        .agents
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let (word, style) = if row.paused {
                ("paused", palette.bad)
            } else if row.running > 0 {
                (clade_core::ExecutionStatus::Running.as_str(), palette.accent)
            } else {
                ("idle", palette.muted)
            };
            let filled = ((row.tokens as f64 / most as f64) * BAR as f64).round() as usize;
            let bar = format!("{}{}", "█".repeat(filled), "░".repeat(BAR - filled.min(BAR)));
            let line = Line::from(vec![
                Span::raw(format!("{:<12} ", truncate(&row.handle, 12))),
                Span::styled(format!("{word:<8}"), style),
                Span::styled(bar, palette.accent),
            ]);
            let item = ListItem::new(line);
            if index == app.selected { item.style(palette.selected) } else { item }
        })
        .collect();
    let block = Block::bordered()
        .title(format!(" agents ({}) ", app.agents.len()))
        .title_bottom(format!(" {} ", app.gateway));
    frame.render_widget(List::new(items).block(block), area);
}

fn agent(frame: &mut Frame, app: &App, palette: Palette, area: Rect) {
    let Some(handle) = app.selected_handle() else {
        let empty = Paragraph::new("no agents yet: /spawn HANDLE makes one")
            .block(Block::bordered().title(" agent "));
        frame.render_widget(empty, area);
        return;
    };
    let rows = (app.sessions.len() as u16).clamp(1, 6) + 2;
    let [sessions, transcript] =
        Layout::vertical([Constraint::Length(rows), Constraint::Min(3)]).areas(area);
    let items: Vec<ListItem> = app
        .sessions
        .iter()
        .map(|(name, state)| {
            ListItem::new(Line::from(vec![
                Span::raw(format!("{name}  ")),
                Span::styled(state.as_str(), palette.muted),
            ]))
        })
        .collect();
    let title = format!(" {handle}: sessions ");
    frame.render_widget(List::new(items).block(Block::bordered().title(title)), sessions);
    let lines = app
        .transcripts
        .get(handle)
        .map(|lines| lines.iter().map(|l| line(l, false, palette)).collect::<Vec<_>>());
    tail(frame, lines.unwrap_or_default(), format!(" {handle}: live "), transcript);
}

fn everyone(frame: &mut Frame, app: &App, palette: Palette, area: Rect) {
    let lines = app.feed.iter().map(|l| line(l, true, palette)).collect();
    tail(frame, lines, " every agent: live ".to_owned(), area);
}

/// The newest lines that fit, oldest at the top.
fn tail(frame: &mut Frame, lines: Vec<Line<'static>>, title: String, area: Rect) {
    let fits = area.height.saturating_sub(2) as usize;
    let skip = lines.len().saturating_sub(fits);
    let shown: Vec<Line> = lines.into_iter().skip(skip).collect();
    let block = Block::bordered().title(title);
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

fn line(line: &super::app::Line, with_agent: bool, palette: Palette) -> Line<'static> {
    let mut spans = Vec::new();
    if with_agent {
        spans.push(Span::styled(format!("{:<12} ", truncate(&line.agent, 12)), palette.accent));
    }
    let failed =
        clade_core::EventKind::parse(&line.kind) == Some(clade_core::EventKind::TurnFailed);
    let style = if failed { palette.bad } else { palette.muted };
    spans.push(Span::styled(format!("{:<15} ", line.kind), style));
    spans.push(Span::raw(line.text.clone()));
    Line::from(spans)
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

# Used by tests/cli.rs.
# Type "$1<TAB>" into an interactive zsh with the completion script $2 loaded,
# and print what zsh lists.
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z "PS1='%% '; autoload -U compinit; compinit -u; source ${(q)2}; setopt autolist nolistambiguous; zstyle ':completion:*' menu no; print READY"
zpty -r z line '*READY*'
zpty -r z line '*READY*'
zpty -n -w z "$1"$'\t'
sleep 2
out=''
while zpty -rt z chunk; do out+=$chunk; done
print -r -- "$out"
zpty -d z

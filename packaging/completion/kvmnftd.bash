# bash completion for kvmnftd                                  -*- shell-script -*-
# Installed as /usr/share/bash-completion/completions/kvmnftd.

_kvmnftd() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local commands="plan apply remove run reload status metrics doctor check help"
    local common="--config --log-level --help"

    case $prev in
        --from-xml)
            COMPREPLY=($(compgen -f -X '!*.xml' -- "$cur") $(compgen -d -- "$cur"))
            compopt -o filenames 2>/dev/null
            return ;;
        --config)
            COMPREPLY=($(compgen -f -- "$cur"))
            compopt -o filenames 2>/dev/null
            return ;;
        --log-level)
            COMPREPLY=($(compgen -W "trace debug info warn error fatal silent" -- "$cur"))
            return ;;
        --events)
            COMPREPLY=($(compgen -W "auto dbus virsh" -- "$cur"))
            return ;;
    esac

    # The command is the first word that is not an option or an option's value.
    local i cmd=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --from-xml|--config|--log-level|--events) ((i++)) ;;
            -*) ;;
            *) cmd=${words[i]}; break ;;
        esac
    done

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--help --version" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts
    case $cmd in
        plan)   opts="--json --diff --from-xml $common" ;;
        apply)  opts="--from-xml $common" ;;
        remove) opts="--force $common" ;;
        run)    opts="--events $common" ;;
        reload) opts="$common" ;;
        status) opts="--json --from-xml $common" ;;
        metrics) opts="$common" ;;
        doctor) opts="--json --from-xml $common" ;;
        check)  opts="$common" ;;
        help)
            [[ $cur != -* ]] && COMPREPLY=($(compgen -W "plan apply remove run reload status metrics doctor check" -- "$cur"))
            return ;;
        *) return ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}

complete -F _kvmnftd kvmnftd

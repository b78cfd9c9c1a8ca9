/* parser.y - the grammar of moe-language.md section 3, as a pure bison parser.
 *
 * Actions only build AST nodes (ast.h) with their locations; every check of meaning
 * lives in the semantic pass. Error recovery: a bad entry (a bad list included: a
 * missing ']' is a common slip) is skipped up to the next key or '}', a bad
 * top-level declaration up to the next `model` or `import`, so one run reports every syntax error of a file (bison stays
 * quiet until three tokens after each recovery, which avoids cascades).
 */
%define api.prefix {moe_yy}
%define api.pure full
%define parse.error detailed
%locations
%expect 0
%param {yyscan_t scanner} {dsl_state *ps}

%code requires {
#include <stdint.h>
#include "dsl.h"
#ifndef MOE_YYSCAN_T
#define MOE_YYSCAN_T
typedef void *yyscan_t;
#endif
}

%code provides {
#define YY_DECL int moe_yylex(MOE_YYSTYPE *yylval_param, MOE_YYLTYPE *yylloc_param, \
                              yyscan_t yyscanner, dsl_state *ps)
YY_DECL;
}

%code {
#include <string.h>
#include "arena.h"
static void moe_yyerror(MOE_YYLTYPE *l, yyscan_t scanner, dsl_state *ps, const char *msg);
#define LOC(l) ((diag_loc){ps->file->path, (l).first_line, (l).first_column})
}

%union {
    int64_t i;
    double f;
    const char *s;
    ast_value *v;
    ast_item *it;
    ast_entry *e;
    ast_block *b;
}

%token END 0 "end of file"
%token <s> IDENT "identifier"
%token <i> INT "integer"
%token <f> FLOAT "float"
%token <s> STRING "string"
%token KW_MODEL "'model'"
%token KW_IMPORT "'import'"
%token KW_TRUE "'true'"
%token KW_FALSE "'false'"
%token KW_X "'x'"
%token DOTDOT "'..'"

%type <s> parent
%type <v> value scalar list items
%type <it> item
%type <e> entry
%type <b> block entries

%%

/* file = { import | model } */
file
    : %empty
    | file import
    | file model
    | file error
    ;

/* import = "import" STRING */
import
    : KW_IMPORT STRING              { ast_file_add_import(ps->a, ps->file, LOC(@2), $2); }
    ;

/* model = "model" IDENT [ ":" IDENT ] block */
model
    : KW_MODEL IDENT parent block   {
            ast_file_add_model(ps->file,
                ast_model_new(ps->a, LOC(@2), $2, $3, LOC(@3), $4));
        }
    ;

parent
    : %empty                        { $$ = NULL; }
    | ':' IDENT                     { $$ = $2; @$ = @2; }
    ;

/* block = "{" { entry [";"] } "}" */
block
    : '{' entries '}'               { $$ = $2; if ($$) $$->loc = LOC(@1); }
    ;

entries
    : %empty                        { $$ = ast_block_new(ps->a, LOC(@$)); }
    | entries entry                 { $$ = ast_block_add($1, $2); }
    | entries entry ';'             { $$ = ast_block_add($1, $2); }
    | entries error                 { $$ = $1; }
    ;

/* entry = IDENT "=" value | IDENT block */
entry
    : IDENT '=' value               { $$ = ast_entry_value(ps->a, LOC(@1), $1, $3); }
    | IDENT block                   { $$ = ast_entry_block(ps->a, LOC(@1), $1, $2); }
    ;

/* value = scalar | list */
value
    : scalar
    | list
    ;

/* scalar = INT | FLOAT | STRING | IDENT | "true" | "false" */
scalar
    : INT                           { $$ = ast_int(ps->a, LOC(@1), $1); }
    | FLOAT                         { $$ = ast_float(ps->a, LOC(@1), $1); }
    | STRING                        { $$ = ast_string(ps->a, LOC(@1), $1); }
    | IDENT                         { $$ = ast_ident(ps->a, LOC(@1), $1); }
    | KW_TRUE                       { $$ = ast_bool(ps->a, LOC(@1), true); }
    | KW_FALSE                      { $$ = ast_bool(ps->a, LOC(@1), false); }
    ;

/* list = "[" [ item { "," item } [","] ] "]" */
list
    : '[' ']'                       { $$ = ast_list(ps->a, LOC(@1)); }
    | '[' items ']'                 { $$ = $2; if ($$) $$->loc = LOC(@1); }
    | '[' items ',' ']'             { $$ = $2; if ($$) $$->loc = LOC(@1); }
    ;

items
    : item                          { $$ = ast_list_add(ast_list(ps->a, LOC(@1)), $1); }
    | items ',' item                { $$ = ast_list_add($1, $3); }
    ;

/* item = scalar [ "x" INT ] | INT ".." INT */
item
    : scalar                        { $$ = ast_item_scalar(ps->a, $1); }
    | scalar KW_X INT               { $$ = ast_item_repeat(ps->a, $1, $3, LOC(@3)); }
    | INT DOTDOT INT                {
            $$ = ast_item_range(ps->a, ast_int(ps->a, LOC(@1), $1), ast_int(ps->a, LOC(@3), $3));
        }
    ;

%%

static void moe_yyerror(MOE_YYLTYPE *l, yyscan_t scanner, dsl_state *ps, const char *msg) {
    (void)scanner;
    if (ps->stop) return;
    diag_error(ps->diag, LOC(*l), "%s", msg);
    /* Lua's habit: say which '{' is still open when the file ends. */
    if (ps->depth > 0 && strstr(msg, "unexpected end of file")) {
        diag_loc o = ps->open[ps->depth - 1];
        diag_hint(ps->diag, "to close the '{' at line %d, column %d", o.line, o.col);
    }
}
